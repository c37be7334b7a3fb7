// Reference Socket.IO 4 server for `herald-loadgen --target socketio://...`:
// the same rooms, publish-with-ack and fan-out as Herald, over Socket.IO's
// websocket transport. Events (docs/LOADGEN.md):
//   client "join"    (room, ack)       join the room; ack(true)
//   client "leave"   (room, ack)       leave the room; ack(true)
//   client "publish" (room, data, ack) server emits "message"(room, data) to
//                                      everyone in the room; ack(true)
//   client "typing"  (room)            server emits "typing"(room) to the
//                                      room's other members
const http = require("http");
const { Server } = require("socket.io");

const server = http.createServer((req, res) => {
  res.writeHead(req.url === "/health" ? 200 : 404).end();
});
const io = new Server(server, { transports: ["websocket"], serveClient: false });
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
const port = Number(process.env.PORT || 3000);
server.listen(port, process.env.HOST || "127.0.0.1", () =>
  console.log(`socket.io reference server on ${process.env.HOST || "127.0.0.1"}:${port}, pid ${process.pid}`));
