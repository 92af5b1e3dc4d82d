// Checks that the stock automerge-repo JS client accepts frames encoded by crdt-core's Rust wire
// codec (crdt-core/tests/fixtures/rust-frames, written by
// `MINKA_UPDATE_RUST_FRAMES=1 cargo test -p crdt-core --test wire_js_fixtures`).
//
// A `ws` server on 127.0.0.1 (ephemeral port) plays the sync server, sending only the Rust-made
// frames; a stock Repo + WebSocketClientAdapter connects to it and must:
//   peer                        -> connect, with the server's peerMetadata
//   sync                        -> answer its `request` and load the document with the right content
//   error                       -> be logged and leave the connection usable
//   ephemeral                   -> fire "ephemeral-message" on the handle with the decoded payload
//   remote-heads-changed        -> fire "remote-heads" for a storage id the client subscribed to
//   remote-subscription-change  -> make the client report those heads back (remote-heads-changed)
//   doc-unavailable             -> reject `find` of an unknown document as unavailable
//
// Usage: cd tests/js && npm ci && node accept-frames.mjs [frames-dir]
// Exits 0 when every check passes, 1 otherwise.

import assert from "node:assert/strict"
import { readFile } from "node:fs/promises"
import path from "node:path"
import { fileURLToPath } from "node:url"

import { Repo, cbor } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { WebSocketServer } from "ws"

const here = path.dirname(fileURLToPath(import.meta.url))
const dir = path.resolve(
  process.argv[2] ?? path.join(here, "../../crdt-core/tests/fixtures/rust-frames")
)
const STEP_TIMEOUT_MS = 5_000

const manifest = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8"))
const frames = {}
for (const file of manifest.frames) {
  const type = file.replace(/^\d+-/, "").replace(/\.cbor$/, "")
  frames[type] = await readFile(path.join(dir, file))
}

function within(promise, what, ms = STEP_TIMEOUT_MS) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Resolves with the first frame from the client matching `pred`. */
function nextFromClient(pred) {
  return new Promise(resolve => waiters.push({ pred, resolve }))
}

const received = []
let waiters = []
let socket

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
await new Promise(r => wss.once("listening", r))
const url = `ws://127.0.0.1:${wss.address().port}`

function serve(type) {
  assert.ok(frames[type], `no Rust frame for ${type}`)
  socket.send(frames[type])
}

wss.on("connection", s => {
  socket = s
  s.on("message", (data, isBinary) => {
    assert.ok(isBinary, "client sent a text frame")
    const msg = cbor.decode(new Uint8Array(data))
    received.push(msg)
    if (msg.type === "join") {
      assert.equal(msg.senderId, manifest.clientPeerId)
      serve("peer")
    } else if (msg.type === "request" && msg.documentId === manifest.documentId) {
      serve("sync")
    } else if (msg.type === "request" && msg.documentId === manifest.missingDocumentId) {
      serve("doc-unavailable")
    }
    waiters = waiters.filter(w => (w.pred(msg) ? (w.resolve(msg), false) : true))
  })
})

const repo = new Repo({
  peerId: manifest.clientPeerId,
  network: [new WebSocketClientAdapter(url, 60_000)],
  enableRemoteHeadsGossiping: true,
})

const checks = []
async function check(name, fn) {
  await fn()
  checks.push(name)
  console.log(`ok - ${name}`)
}

async function main() {
  await check("peer: the client connects and keeps the server's peerMetadata", async () => {
    await within(
      (async () => {
        while (!repo.peers.includes(manifest.serverPeerId)) await new Promise(r => setTimeout(r, 10))
      })(),
      "client to accept the peer message"
    )
    assert.deepEqual(repo.peerMetadataByPeerId[manifest.serverPeerId], {
      storageId: manifest.serverStorageId,
      isEphemeral: false,
    })
  })

  let handle
  await check("sync: the client loads the document from the Rust sync message", async () => {
    handle = await within(repo.find(`automerge:${manifest.documentId}`), "find() to resolve")
    assert.deepEqual(JSON.parse(JSON.stringify(handle.doc())), manifest.expectedDoc)
  })

  await check("error: the client survives an error message", async () => {
    serve("error")
    await new Promise(r => setTimeout(r, 100))
    assert.equal(socket.readyState, socket.OPEN)
  })

  await check("ephemeral: the handle emits the Rust ephemeral message", async () => {
    const got = new Promise(resolve => handle.once("ephemeral-message", resolve))
    serve("ephemeral")
    const event = await within(got, "ephemeral-message event")
    assert.equal(event.senderId, manifest.serverPeerId)
    assert.deepEqual(event.message, manifest.ephemeralMessage)
  })

  await check("remote-heads-changed: the handle reports the Rust-sent heads", async () => {
    const subscribed = nextFromClient(m => m.type === "remote-subscription-change")
    repo.subscribeToRemotes([manifest.watchedStorageId])
    await within(subscribed, "client to send remote-subscription-change")
    const got = new Promise(resolve => handle.once("remote-heads", resolve))
    serve("remote-heads-changed")
    const event = await within(got, "remote-heads event")
    assert.equal(event.storageId, manifest.watchedStorageId)
    assert.deepEqual(event.heads, manifest.heads)
    assert.equal(event.timestamp, manifest.headsTimestamp)
  })

  await check("remote-subscription-change: the client reports heads it knows", async () => {
    const reported = nextFromClient(
      m => m.type === "remote-heads-changed" && m.newHeads?.[manifest.watchedStorageId]
    )
    serve("remote-subscription-change")
    const msg = await within(reported, "client to send remote-heads-changed")
    assert.equal(msg.documentId, manifest.documentId)
    assert.deepEqual(msg.newHeads[manifest.watchedStorageId].heads, manifest.heads)
  })

  await check("doc-unavailable: find() of an unknown document fails as unavailable", async () => {
    const err = await within(
      repo.find(`automerge:${manifest.missingDocumentId}`).then(
        () => assert.fail("unknown document was found"),
        e => e
      ),
      "find() to reject"
    )
    assert.match(String(err), /unavailable/)
  })
}

let failed = false
try {
  await within(main(), "whole run", 30_000)
  console.log(`all ${checks.length} checks passed against frames in ${dir}`)
} catch (e) {
  failed = true
  console.error("not ok -", e)
}
await Promise.allSettled([repo.shutdown()])
wss.close()
process.exit(failed ? 1 : 0)
