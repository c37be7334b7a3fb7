export { Herald, Subscription, VERSION } from "./client.js";
export { ErrorCode, HeraldError, errorCodeName, errorFromClose, type ErrorCodeName } from "./errors.js";
export type { Listener } from "./emitter.js";
export type * from "./types.js";
