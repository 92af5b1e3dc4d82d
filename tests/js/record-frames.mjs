// Records the CBOR frames the stock automerge-repo JS stack puts on the wire, as fixtures for
// crdt-core's wire codec (crdt-core/tests/wire_js_fixtures.rs).
//
// A `ws` server on 127.0.0.1 (ephemeral port) runs a real automerge-repo peer
// (Repo + WebSocketServerAdapter), so every answer it gives is the one a stock JS sync server
// gives. Two stock clients (Repo + WebSocketClientAdapter) connect to it:
//   A: no storage   -> peerMetadata {storageId: undefined, isEphemeral: true}
//   B: in-memory storage -> a real storageId, isEphemeral false
// Every binary frame in both directions is tapped at the server socket and written to
// crdt-core/tests/fixtures/js-frames/NNN-<type>.cbor (at most MAX_PER_KIND frames per
// direction and type), with manifest.json giving each frame's direction and cbor-x's own decoding of it.
//
// Usage: cd tests/js && npm ci && node record-frames.mjs [output-dir]
// Exits non-zero if any expected frame kind was not seen.

import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises"
import path from "node:path"
import { fileURLToPath } from "node:url"

import { Repo, cbor, generateAutomergeUrl } from "@automerge/automerge-repo"
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket"
import { WebSocket, WebSocketServer } from "ws"

const here = path.dirname(fileURLToPath(import.meta.url))
const outDir = path.resolve(
  process.argv[2] ??
    path.join(here, "../../crdt-core/tests/fixtures/js-frames")
)
const MAX_PER_KIND = 3
const PACKAGES = [
  "@automerge/automerge-repo",
  "@automerge/automerge-repo-network-websocket",
  "@automerge/automerge",
  "cbor-x",
]
const TIMEOUT_MS = 10_000

// Frames that must be seen for the recording to count. "c->s" is sent by a stock client,
// "s->c" by the stock server peer.
const EXPECTED = [
  "c->s join",
  "c->s request",
  "c->s sync",
  "c->s doc-unavailable",
  "c->s ephemeral",
  "c->s remote-subscription-change",
  "c->s remote-heads-changed",
  "s->c peer",
  "s->c error",
  "s->c sync",
  "s->c doc-unavailable",
  "s->c ephemeral",
  "s->c remote-subscription-change",
  "s->c remote-heads-changed",
]

/** Minimal in-memory StorageAdapterInterface, so client B advertises a storageId. */
class MemoryStorage {
  #data = new Map()
  #k = key => key.join("/")
  async load(key) {
    return this.#data.get(this.#k(key))
  }
  async save(key, data) {
    this.#data.set(this.#k(key), data)
  }
  async remove(key) {
    this.#data.delete(this.#k(key))
  }
  async loadRange(prefix) {
    const p = this.#k(prefix)
    return [...this.#data]
      .filter(([k]) => k.startsWith(p))
      .map(([k, data]) => ({ key: k.split("/"), data }))
  }
  async removeRange(prefix) {
    const p = this.#k(prefix)
    for (const k of [...this.#data.keys()]) if (k.startsWith(p)) this.#data.delete(k)
  }
}

const frames = [] // {direction, type, senderId, targetId, bytes}
const seen = new Map() // "dir type" -> count

function record(direction, data) {
  const bytes = Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data)
  let message
  try {
    message = cbor.decode(bytes)
  } catch (e) {
    throw new Error(`undecodable ${direction} frame: ${e}`)
  }
  const kind = `${direction} ${message.type}`
  const n = seen.get(kind) ?? 0
  seen.set(kind, n + 1)
  if (n < MAX_PER_KIND) frames.push({ direction, message, bytes })
}

/** cbor-x's decoding of a frame as JSON, for the Rust test to compare its own decoding
 * against: byte arrays become {"bytes": "<hex>"}, `undefined`/`null` fields are dropped. */
function toJson(v) {
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString("hex") }
  if (Array.isArray(v)) return v.map(toJson)
  if (v !== null && typeof v === "object") {
    const out = {}
    for (const [k, x] of Object.entries(v)) if (x != null) out[k] = toJson(x)
    return out
  }
  return v
}

async function waitFor(kind, timeout = TIMEOUT_MS) {
  const start = Date.now()
  while (!seen.has(kind)) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${kind}`)
    await new Promise(r => setTimeout(r, 20))
  }
}

const sleep = ms => new Promise(r => setTimeout(r, ms))

async function main() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
  await new Promise(r => wss.once("listening", r))
  const url = `ws://127.0.0.1:${wss.address().port}`

  // Tap every socket before the adapter sees it. `/raw` sockets are the hand-made one used to
  // provoke `error`; only the server's answer on them is recorded.
  wss.on("connection", (socket, req) => {
    if (req.url !== "/raw") {
      socket.on("message", (data, isBinary) => {
        if (isBinary) record("c->s", data)
      })
    }
    const send = socket.send.bind(socket)
    socket.send = (data, ...rest) => {
      record("s->c", data)
      return send(data, ...rest)
    }
  })

  const server = new Repo({
    peerId: "server-peer",
    network: [new WebSocketServerAdapter(wss)],
    storage: new MemoryStorage(),
    enableRemoteHeadsGossiping: true,
  })
  const clientA = new Repo({
    peerId: "client-a",
    network: [new WebSocketClientAdapter(url, 60_000)],
    enableRemoteHeadsGossiping: true,
  })
  const clientB = new Repo({
    peerId: "client-b",
    network: [new WebSocketClientAdapter(url, 60_000)],
    storage: new MemoryStorage(),
    enableRemoteHeadsGossiping: true,
  })
  const serverStorageId = await server.storageId()
  const storageB = await clientB.storageId()

  await waitFor("s->c peer")
  await clientA.networkSubsystem.whenReady()
  await clientB.networkSubsystem.whenReady()
  while (server.peers.length < 2) await sleep(20)

  // A asks the server to watch the server's own storage id; the server passes the
  // subscription on to its other peer (B), which later reports heads it syncs with the server.
  clientA.subscribeToRemotes([serverStorageId, storageB])
  await waitFor("c->s remote-subscription-change")
  await waitFor("s->c remote-subscription-change")

  // A creates a document: `sync` from A; B finds it: `request` from B, `sync` answers.
  const handleA = clientA.create({ title: "Acta de sesión", items: [] })
  handleA.change(d => {
    d.items.push({ concepto: "Losa deportiva", monto: 120000 })
  })
  await waitFor("c->s sync")
  const handleB = await clientB.find(handleA.url)
  await waitFor("c->s request")
  await waitFor("s->c sync")

  // B edits: B syncs with the server (storage id subscribed by A) -> the server tells A
  // (`remote-heads-changed` s->c) and B tells the server about the server's heads (c->s).
  handleB.change(d => {
    d.title = "Acta de sesión (revisada)"
  })
  await waitFor("s->c remote-heads-changed")
  await waitFor("c->s remote-heads-changed")

  // Ephemeral: A broadcasts, the server relays to B.
  handleA.broadcast({ cursor: 3, user: "ana" })
  await waitFor("c->s ephemeral")
  await waitFor("s->c ephemeral")

  // A asks for a document nobody has: the server asks B (`request` s->c), B answers
  // `doc-unavailable` (c->s), and the server tells A `doc-unavailable` (s->c).
  const missing = clientA.find(generateAutomergeUrl()).then(
    () => {
      throw new Error("unknown document was found")
    },
    e => e
  )
  await waitFor("c->s doc-unavailable")
  await waitFor("s->c doc-unavailable")
  const err = await missing
  if (!/unavailable/.test(String(err))) throw err

  // `error`: the stock server adapter's answer to a join with an unsupported protocol.
  const raw = new WebSocket(`${url}/raw`)
  await new Promise((resolve, reject) => {
    raw.once("open", resolve)
    raw.once("error", reject)
  })
  raw.send(
    cbor.encode({
      type: "join",
      senderId: "raw-peer",
      peerMetadata: { isEphemeral: true },
      supportedProtocolVersions: ["99"],
    })
  )
  await waitFor("s->c error")
  raw.close()

  await sleep(300) // let trailing sync rounds land
  const missingKinds = EXPECTED.filter(k => !seen.has(k))
  if (missingKinds.length) throw new Error(`never saw: ${missingKinds.join(", ")}`)

  await Promise.allSettled([clientA.shutdown(), clientB.shutdown()])
  await Promise.allSettled([server.shutdown()])
  wss.close()

  await mkdir(outDir, { recursive: true })
  for (const f of await readdir(outDir)) {
    if (f.endsWith(".cbor") || f === "manifest.json") await rm(path.join(outDir, f))
  }
  const manifest = []
  for (const [i, f] of frames.entries()) {
    const file = `${String(i + 1).padStart(3, "0")}-${f.message.type}.cbor`
    await writeFile(path.join(outDir, file), f.bytes)
    manifest.push({ file, direction: f.direction, message: toJson(f.message) })
  }
  const versions = {}
  for (const pkg of PACKAGES) {
    const json = await readFile(path.join(here, "node_modules", pkg, "package.json"), "utf8")
    versions[pkg] = JSON.parse(json).version
  }
  await writeFile(
    path.join(outDir, "manifest.json"),
    JSON.stringify({ recordedWith: versions, frames: manifest }, null, 2) + "\n"
  )
  console.log(`wrote ${frames.length} frames to ${outDir}`)
  for (const [kind, n] of [...seen].sort()) console.log(`  ${kind}: ${n}`)
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e)
    process.exit(1)
  }
)
