// The official socket.io 2 server (engine.io 3), unchanged, installed under the npm alias
// "sio2"; the same room and /emit contract as socketio4.js. Its clients must ping it.
const http = require("http");
const port = parseInt(process.argv[2] || "0");
const pingInterval = parseInt(process.argv[3] || "25000");
const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/emit") {
    const group = url.searchParams.get("group"), seq = parseInt(url.searchParams.get("seq"));
    const now = BigInt(Date.now()) * 1000000n;
    const field = `[1,"${"a".repeat(32)}","${group}",${seq},"node2",${now},${now},${now},${now}]`;
    io.to(`group.${group}`).emit("message", JSON.parse(`{"mqprobe":${field},"body":"x"}`));
    res.end("ok"); return;
  }
  res.end();
});
const io = require("sio2")(server, { pingInterval, pingTimeout: 1000 });
io.on("connection", (socket) => {
  socket.on("join", (data, ack) => { socket.join(`group.${data.group}`); if (ack) ack(true); });
});
server.listen(port, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
