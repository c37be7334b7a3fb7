/** Herald error codes (`ErrorCode` in schemas/herald.fbs), by name. */
export const ErrorCode = {
  Ok: 0,
  BadRequest: 100,
  Forbidden: 101,
  NotFound: 102,
  InvalidRoomName: 103,
  TooManyRooms: 104,
  RateLimited: 105,
  PayloadTooLarge: 106,
  NotSubscribed: 107,
  RoomFull: 108,
  VolatileNotAllowed: 109,
  Unavailable: 110,
  Timeout: 111,
  Overloaded: 112,
  MalformedFrame: 200,
  FrameTooLarge: 201,
  UnsupportedFrame: 202,
  ProtocolViolation: 203,
  HandshakeTimeout: 204,
  AuthFailed: 205,
  TokenExpired: 206,
  IdleTimeout: 207,
  SlowConsumer: 208,
  ServerShutdown: 209,
  ConnectionLimit: 210,
  Kicked: 211,
  InternalError: 212,
  UnsupportedVersion: 213,
} as const;

/** The name of a known error code. */
export type ErrorCodeName = keyof typeof ErrorCode;

const NAMES: { [n: number]: ErrorCodeName } = {};
for (const k in ErrorCode) NAMES[ErrorCode[k as ErrorCodeName]] = k as ErrorCodeName;

/** The name of a numeric code; "Unknown" for a code this client does not know. */
export function errorCodeName(code: number): ErrorCodeName | "Unknown" {
  return NAMES[code] ?? "Unknown";
}

/**
 * Every error this client reports: a server `Reply`/`Error`/`GoAway` code,
 * a WebSocket close, or a client-side condition (`Timeout`, `Unavailable`).
 */
export class HeraldError extends Error {
  /** Code name, e.g. "Kicked" ("Unknown" for a code newer than this client). */
  readonly code: ErrorCodeName | "Unknown";
  /** Numeric code, e.g. 211. */
  readonly codeNumber: number;
  /** Codes >= 200 end the connection; codes < 200 answer one request. */
  readonly fatal: boolean;
  /** The WebSocket close code, when the error comes from a close. */
  readonly closeCode?: number;
  /** The room concerned, if any. */
  readonly room?: string;

  constructor(code: number, message?: string, room?: string, closeCode?: number) {
    const name = errorCodeName(code);
    super(message ? `${name}: ${message}` : name);
    this.name = "HeraldError";
    this.code = name;
    this.codeNumber = code;
    this.fatal = code >= 200;
    if (room !== undefined) this.room = room;
    if (closeCode !== undefined) this.closeCode = closeCode;
  }
}

/**
 * Maps a WebSocket close to an error. 4000 + code is a Herald error; RFC 6455
 * codes are transport closes: 1002/1007 (invalid frame or data) read as
 * MalformedFrame, 1003 (text message) as UnsupportedFrame, 1009 (too big) as
 * FrameTooLarge, anything else (1000, 1001, 1006, ...) as Unavailable.
 */
export function errorFromClose(closeCode: number, reason = ""): HeraldError {
  let code: number = ErrorCode.Unavailable;
  if (closeCode >= 4000 && closeCode < 5000) code = closeCode - 4000;
  else if (closeCode === 1002 || closeCode === 1007) code = ErrorCode.MalformedFrame;
  else if (closeCode === 1003) code = ErrorCode.UnsupportedFrame;
  else if (closeCode === 1009) code = ErrorCode.FrameTooLarge;
  return new HeraldError(code, reason || `connection closed (${closeCode})`, undefined, closeCode);
}

/**
 * Whether the client reconnects after a connection ended with `code`:
 * never after AuthFailed, UnsupportedVersion or Kicked; after TokenExpired
 * only when a `getToken` callback can supply a fresh token.
 */
export function shouldReconnect(code: number, canRefreshToken: boolean): boolean {
  if (code === ErrorCode.TokenExpired) return canRefreshToken;
  return code !== ErrorCode.AuthFailed && code !== ErrorCode.UnsupportedVersion && code !== ErrorCode.Kicked;
}
