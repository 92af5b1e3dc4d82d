// Reference peer for the Minka benchmark: the setup of @automerge/automerge-repo-sync-server
// (a Repo with NodeWSServerAdapter and NodeFSStorageAdapter, sharePolicy: async () => false),
// without express: a plain node http server that upgrades every path to the WebSocket.
//
// Usage: node server.mjs [PORT] [DATA_DIR]   (or env PORT, DATA_DIR; PORT 0 picks a free one)
// Prints "listening on <port>" once ready.
import fs from "node:fs"
import http from "node:http"
import os from "node:os"
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const port = parseInt(process.argv[2] ?? process.env.PORT ?? "3030", 10)
const dir = process.argv[3] ?? process.env.DATA_DIR ?? ".amrg"
fs.mkdirSync(dir, { recursive: true })

const wss = new WebSocketServer({ noServer: true })
const repo = new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `storage-server-${os.hostname()}`,
  // As the stock sync server: share nothing generously; peers sync the documents they ask for.
  sharePolicy: async () => false,
})

const server = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain" })
  res.end("automerge-repo sync server is running\n")
})
server.on("upgrade", (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => {
    wss.emit("connection", ws, request)
  })
})
// The network adapter registers its "connection" handler only once the repo has loaded its
// storage id; a socket accepted before that would never be answered. Listen after it.
while (wss.listenerCount("connection") === 0) {
  await new Promise((resolve) => setTimeout(resolve, 10))
}
server.listen(port, "127.0.0.1", () => {
  console.log(`listening on ${server.address().port}`)
})

async function shutdown() {
  wss.close()
  server.close()
  try {
    await repo.shutdown()
  } finally {
    process.exit(0)
  }
}
process.on("SIGTERM", shutdown)
process.on("SIGINT", shutdown)
