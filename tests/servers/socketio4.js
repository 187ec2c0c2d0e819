// The official socket.io 4 server, unchanged; clients join a group room, GET /emit?group=G&seq=N
// sends one traced event to it (the trace field first in the object, as mqprobe.embed does);
// GET /kick closes every client's connection.
const http = require("http");
const { Server } = require("socket.io");
const port = parseInt(process.argv[2] || "0");
const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/emit") {
    const group = url.searchParams.get("group"), seq = parseInt(url.searchParams.get("seq"));
    const now = BigInt(Date.now()) * 1000000n;
    const field = `[1,"${"a".repeat(32)}","${group}",${seq},"node4",${now},${now},${now},${now}]`;
    // the field must come first in the event's object, so write the frame by hand
    io.to(`group.${group}`).emit("message", JSON.parse(`{"mqprobe":${field},"body":"x"}`));
    res.end("ok"); return;
  }
  if (url.pathname === "/kick") { io.disconnectSockets(true); res.end("ok"); return; }
  res.end();
});
const io = new Server(server, { cors: { origin: "*" } });
io.on("connection", (socket) => {
  socket.on("join", (data, ack) => { socket.join(`group.${data.group}`); if (ack) ack(true); });
});
server.listen(port, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
