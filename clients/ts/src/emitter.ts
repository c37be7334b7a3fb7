/** An event handler. */
export type Listener<T> = (event: T) => void;

/** A minimal typed event emitter (`on` returns a function that removes the handler). */
export class Emitter<E> {
  private _h: { [K in keyof E]?: Array<Listener<E[K]>> } = {};

  /** Adds a handler; returns a function that removes it. */
  on<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    (this._h[event] ??= []).push(fn);
    return () => this.off(event, fn);
  }

  /** Adds a handler called at most once. */
  once<K extends keyof E>(event: K, fn: Listener<E[K]>): () => void {
    const off = this.on(event, (e) => {
      off();
      fn(e);
    });
    return off;
  }

  /** Removes a handler, or every handler of the event when `fn` is omitted. */
  off<K extends keyof E>(event: K, fn?: Listener<E[K]>): void {
    const l = this._h[event];
    if (!l) return;
    if (!fn) l.length = 0;
    else {
      const i = l.indexOf(fn);
      if (i >= 0) l.splice(i, 1);
    }
  }

  /**
   * Calls the handlers. An exception in a handler does not disturb the
   * client: it is rethrown asynchronously (an uncaught error, as in DOM
   * event dispatch).
   * @internal
   */
  _emit<K extends keyof E>(event: K, arg: E[K]): void {
    const l = this._h[event];
    if (!l || !l.length) return;
    for (const fn of l.slice()) {
      try {
        fn(arg);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}
