// Reference Socket.IO 4 server for `herald-loadgen --target socketio://...`:
// the same rooms, publish-with-ack and fan-out as Herald, over Socket.IO's
// websocket transport. Events (docs/LOADGEN.md):
//   client "join"    (room, ack)       join the room; ack(true)
//   client "leave"   (room, ack)       leave the room; ack(true)
//   client "publish" (room, data, ack) server emits "message"(room, data) to
//                                      everyone in the room; ack(true)
//   client "typing"  (room)            server emits "typing"(room) to the
//                                      room's other members
// With REDIS_URL set (e.g. redis://127.0.0.1:6391), several processes share
// rooms through @socket.io/redis-streams-adapter, set up as its README does
// with node-redis v4: a room's emit reaches members on every process. The
// publish is acknowledged once the local emit is done and the adapter has
// been handed the broadcast, as in one process. Without REDIS_URL the
// server is the single process it always was.
const http = require("http");
const { Server } = require("socket.io");

async function adapter(url) {
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-streams-adapter");
  const client = createClient({ url });
  client.on("error", (e) => console.error(`redis: ${e.message}`));
  await client.connect();
  return createAdapter(client);
}

async function main() {
  const server = http.createServer((req, res) => {
    res.writeHead(req.url === "/health" ? 200 : 404).end();
  });
  const options = { transports: ["websocket"], serveClient: false };
  if (process.env.REDIS_URL) options.adapter = await adapter(process.env.REDIS_URL);
  const io = new Server(server, options);
  const reply = (ack) => typeof ack === "function" && ack(true);
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => { socket.join(String(room)); reply(ack); });
    socket.on("leave", (room, ack) => { socket.leave(String(room)); reply(ack); });
    socket.on("publish", (room, data, ack) => {
      io.to(String(room)).emit("message", String(room), data);
      reply(ack);
    });
    socket.on("typing", (room) => socket.to(String(room)).emit("typing", String(room)));
  });
  const host = process.env.HOST || "127.0.0.1";
  const port = Number(process.env.PORT || 3000);
  server.listen(port, host, () =>
    console.log(`socket.io reference server on ${host}:${port}, pid ${process.pid}` +
      (process.env.REDIS_URL ? `, redis-streams adapter at ${process.env.REDIS_URL}` : "")));
}

main().catch((e) => {
  console.error(`socket.io reference server: ${e.message}`);
  process.exit(1);
});
