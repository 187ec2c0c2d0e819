// The official socket.io 4 server, unchanged; clients join a group room, GET /emit?group=G&seq=N
// sends one traced event to it (the trace field first in the object, as mqprobe.embed does);
// GET /kick closes every client's connection; GET /burst?group=G&rate=R&seconds=S emits R
// messages a second to the room for S seconds (a load source cheaper than any python node).
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
  if (url.pathname === "/burst") {  // rate messages/s to the group's room for seconds, every 10 ms
    const group = url.searchParams.get("group"), rate = parseFloat(url.searchParams.get("rate"));
    const seconds = parseFloat(url.searchParams.get("seconds"));
    const start = Date.now();
    let seq = 0;
    const timer = setInterval(() => {
      const due = Math.min(rate * seconds, Math.floor((Date.now() - start) * rate / 1000));
      for (; seq < due; seq++) {
        const now = BigInt(Date.now()) * 1000000n;
        const field = `[1,"${"a".repeat(32)}","${group}",${seq},"node4",${now},${now},${now},${now}]`;
        io.to(`group.${group}`).emit("message", JSON.parse(`{"mqprobe":${field},"body":"x"}`));
      }
      if (seq >= rate * seconds) { clearInterval(timer); }
    }, 10);
    res.end("ok"); return;
  }
  res.end();
});
const io = new Server(server, { cors: { origin: "*" } });
io.on("connection", (socket) => {
  socket.on("join", (data, ack) => { socket.join(`group.${data.group}`); if (ack) ack(true); });
});
server.listen(port, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
