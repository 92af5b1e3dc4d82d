// Stock-client reconnect cost: stock @automerge/automerge-repo 2.5.6 clients (Repo +
// WebSocketClientAdapter, each with its own in-memory storage, so sync states persist the way
// automerge-repo persists them) that hold synced documents reconnect through a counting WebSocket
// proxy. Reports messages and bytes per document in each direction.
//
//   node bench-reconnect.mjs --url ws://127.0.0.1:PORT/sync [--clients 100] [--docs 20] [--pool 200]
//        [--concurrency 25] [--quiet-ms 500] [--timeout-s 180]
//
// BENCH_TRACE=1 prints every counted frame (stderr).
// BENCH_JWT_SECRET (or --secret) signs an HS256 token per client (`?token=`, leader of 150110);
// servers that need none ignore it. The load generator (`loadgen --workloads stock-reconnect`)
// starts the server and runs this script; it can also run alone against a running server.
//
// Phases:
//   0. a seeding client creates --pool schema-v1 proposals and waits until the server
//      acknowledged each (its sync reply carries the document's heads);
//   1. each client (a new Repo with its own MemoryStorage) finds its --docs documents (client c
//      holds pool documents c, c + pool/docs, … mod pool) directly from the server, waits until
//      the server reported the same heads for each, and shuts down (waves of --concurrency);
//   2. every client starts again, offline: a new Repo over the same storage (same storage id, a new
//      random peer id, as a restarted app) finds its documents (loaded from storage); then all
//      clients get their network adapter at once (`repo.networkSubsystem.addNetworkAdapter`),
//      connected through the proxy, and sync (loading their persisted sync states). Counting
//      starts here; the phase ends when every client got the server's `peer` and no frame has
//      crossed the proxy for --quiet-ms (not counted in the time).
// stdout: one JSON line {"event":"reconnect"} when phase 2 starts, one {"event":"result",...}.
// Progress goes to stderr.

import { createHmac } from "node:crypto"
import http from "node:http"
import { performance } from "node:perf_hooks"

import { Repo, cbor } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { WebSocket, WebSocketServer } from "ws"

// ---- arguments ----

function parseArgs(argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`)
    out[a.slice(2)] = argv[++i]
  }
  return out
}
const args = parseArgs(process.argv.slice(2))
if (!args.url) {
  console.error("usage: node bench-reconnect.mjs --url ws://HOST:PORT/PATH [--clients N] [--docs D] [--pool P]")
  process.exit(2)
}
const URL_BASE = args.url
const CLIENTS = parseInt(args.clients ?? "100", 10)
const DOCS = parseInt(args.docs ?? "20", 10)
const POOL = Math.max(parseInt(args.pool ?? "200", 10), 1)
const CONCURRENCY = Math.max(parseInt(args.concurrency ?? "25", 10), 1)
const QUIET_MS = parseInt(args["quiet-ms"] ?? "500", 10)
const TIMEOUT_MS = parseInt(args["timeout-s"] ?? "180", 10) * 1000
const SECRET = args.secret ?? process.env.BENCH_JWT_SECRET ?? "minka-bench-secret-not-for-production"
const DISTRICT = "150110"
const TRACE = !!process.env.BENCH_TRACE

const log = (...m) => console.error(`[bench-reconnect ${(performance.now() / 1000).toFixed(1)}s]`, ...m)
const sleep = ms => new Promise(r => setTimeout(r, ms))

// ---- tokens ----

const b64url = v => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url")
function token(sub) {
  const now = Math.floor(Date.now() / 1000)
  const claims = { sub, name: `Dirigente ${sub}`, roles: ["leader"], district: DISTRICT, iat: now, exp: now + 8 * 3600 }
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}`
  return `${head}.${createHmac("sha256", SECRET).update(head).digest("base64url")}`
}
function withToken(base, sub) {
  return `${base}${base.includes("?") ? "&" : "?"}token=${token(sub)}`
}

// ---- an in-memory storage adapter (the StorageAdapterInterface) that outlives its Repo ----

const SEP = "\u0000"
class MemoryStorage {
  #data = new Map()
  async load(key) {
    return this.#data.get(key.join(SEP))
  }
  async save(key, data) {
    this.#data.set(key.join(SEP), new Uint8Array(data))
  }
  async remove(key) {
    this.#data.delete(key.join(SEP))
  }
  async loadRange(prefix) {
    const p = prefix.join(SEP)
    const out = []
    for (const [k, data] of this.#data) {
      if (k === p || k.startsWith(p + SEP)) out.push({ key: k.split(SEP), data })
    }
    return out
  }
  async removeRange(prefix) {
    const p = prefix.join(SEP)
    for (const k of [...this.#data.keys()]) {
      if (k === p || k.startsWith(p + SEP)) this.#data.delete(k)
    }
  }
  /** Keys of persisted sync states with `storageId`. */
  syncStates(storageId) {
    return [...this.#data.keys()].filter(k => {
      const parts = k.split(SEP)
      return parts[1] === "sync-state" && parts[2] === storageId
    }).length
  }
}

// ---- stock clients ----

/** The stock adapter; a closed adapter stays closed (its retry timer cannot reconnect it). */
class Adapter extends WebSocketClientAdapter {
  #closed = false
  connect(peerId, peerMetadata) {
    if (this.#closed) return
    super.connect(peerId, peerMetadata)
  }
  disconnect() {
    this.#closed = true
    if (this.socket) super.disconnect()
  }
}

function proposal(createdBy, i) {
  return {
    type: "proposal",
    schemaVersion: 1,
    district: DISTRICT,
    processYear: 2027,
    title: `Mejoramiento de la losa deportiva del sector ${i}`,
    description: "Construcción de graderías, cerco perimétrico e iluminación para la losa deportiva.",
    zone: `Zona ${(i % 5) + 1}`,
    category: "infraestructura",
    beneficiaries: 300 + i,
    estimatedCost: 45_000_000 + 10_000 * i,
    cofinancing: 2_000_000,
    status: "draft",
    createdBy,
    coauthors: { [createdBy]: true },
    supporters: {},
    comments: [],
  }
}

const sameHeads = (a, b) => {
  if (!a || !b || a.length !== b.length) return false
  const sa = [...a].sort()
  const sb = [...b].sort()
  return sa.every((h, i) => h === sb[i])
}

async function waitFor(cond, what, ms) {
  const deadline = performance.now() + ms
  for (;;) {
    if (await cond()) return
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

function serverStorageId(repo) {
  const peer = repo.peers[0]
  return peer ? repo.peerMetadataByPeerId[peer]?.storageId : undefined
}

/** Waits until the server reported `handle`'s heads (its sync reply), as an app would read it. */
async function acknowledged(repo, handle, ms) {
  await waitFor(
    () => {
      const sid = serverStorageId(repo)
      return sid && sameHeads(handle.getSyncInfo(sid)?.lastHeads, handle.heads())
    },
    `the server to report heads of ${handle.documentId}`,
    ms
  )
}

// ---- the counting proxy ----

const counts = {
  on: false,
  up: { msgs: {}, bytes: 0 },
  down: { msgs: {}, bytes: 0 },
  lastFrame: 0,
  /** `${conn}:${documentId}` the server sent a `sync` (or `request`) about. */
  heard: new Set(),
  connected: 0,
}

function count(dir, conn, data) {
  if (!counts.on) return
  const bytes = data.byteLength ?? data.length
  counts[dir].bytes += bytes
  counts.lastFrame = performance.now()
  let type = "undecodable"
  let doc
  try {
    const m = cbor.decode(new Uint8Array(data.buffer ?? data, data.byteOffset ?? 0, bytes))
    type = m?.type ?? "unknown"
    doc = m?.documentId
  } catch {
    // counted as undecodable
  }
  counts[dir].msgs[type] = (counts[dir].msgs[type] ?? 0) + 1
  if (TRACE) log(`conn ${conn} ${dir === "up" ? "->" : "<-"} ${type}${doc ? ` ${doc}` : ""} (${bytes} B)`)
  if (dir === "down" && (type === "sync" || type === "request") && doc) counts.heard.add(`${conn}:${doc}`)
  if (dir === "down" && type === "peer" && ++counts.connected === CLIENTS) {
    log(`reconnect: every client got its peer message after ${((performance.now() - counts.t0) / 1000).toFixed(1)} s`)
  }
}

async function startProxy(upstream) {
  const up = new URL(upstream)
  const origin = `${up.protocol}//${up.host}`
  const server = http.createServer((_, res) => res.end())
  const wss = new WebSocketServer({ server })
  let nextConn = 0
  const errors = []
  wss.on("connection", (client, req) => {
    const conn = nextConn++
    const upstreamSocket = new WebSocket(origin + req.url)
    const pending = []
    client.conn = conn
    upstreamSocket.on("open", () => {
      for (const [d, bin] of pending) upstreamSocket.send(d, { binary: bin })
      pending.length = 0
    })
    client.on("message", (data, isBinary) => {
      count("up", conn, data)
      if (upstreamSocket.readyState === WebSocket.OPEN) upstreamSocket.send(data, { binary: isBinary })
      else pending.push([data, isBinary])
    })
    upstreamSocket.on("message", (data, isBinary) => {
      count("down", conn, data)
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary })
    })
    const closeBoth = () => {
      if (client.readyState <= WebSocket.OPEN) client.close()
      if (upstreamSocket.readyState <= WebSocket.OPEN) upstreamSocket.terminate()
    }
    client.on("close", closeBoth)
    upstreamSocket.on("close", closeBoth)
    client.on("error", e => errors.length < 5 && errors.push(`client side: ${e.message}`))
    upstreamSocket.on("error", e => errors.length < 5 && errors.push(`server side: ${e.message}`))
  })
  await new Promise(r => server.listen(0, "127.0.0.1", r))
  const path = up.pathname + up.search
  return {
    url: `ws://127.0.0.1:${server.address().port}${path}`,
    errors,
    close: () => {
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.close()
    },
  }
}

// ---- the run ----

async function main() {
  const errors = []
  const started = performance.now()

  // 0. Seed the pool.
  const seeder = new Repo({ network: [new Adapter(withToken(URL_BASE, "bench-c0"), 1000)] })
  await waitFor(() => serverStorageId(seeder), "the server's peer message (seeder)", 30_000)
  const handles = []
  for (let i = 0; i < POOL; i++) handles.push(seeder.create(proposal("bench-c0", i)))
  await Promise.all(handles.map(h => acknowledged(seeder, h, TIMEOUT_MS)))
  const urls = handles.map(h => h.url)
  await seeder.shutdown()
  log(`seeded ${POOL} proposals`)

  const docs = Math.min(DOCS, POOL)
  const step = Math.max(Math.floor(POOL / docs), 1)
  const clientDocs = c => Array.from({ length: docs }, (_, j) => urls[(c + j * step) % POOL])
  const storages = Array.from({ length: CLIENTS }, () => new MemoryStorage())
  let serverSid

  // 1. First sync, in waves; every client then shuts down.
  const t1 = performance.now()
  for (let first = 0; first < CLIENTS; first += CONCURRENCY) {
    const wave = []
    for (let c = first; c < Math.min(first + CONCURRENCY, CLIENTS); c++) {
      wave.push(
        (async () => {
          const repo = new Repo({
            storage: storages[c],
            network: [new Adapter(withToken(URL_BASE, `bench-c${c}`), 1000)],
          })
          try {
            await waitFor(() => serverStorageId(repo), `client ${c}: the server's peer message`, TIMEOUT_MS)
            serverSid ??= serverStorageId(repo)
            const hs = await Promise.all(clientDocs(c).map(u => repo.find(u)))
            await Promise.all(hs.map(h => acknowledged(repo, h, TIMEOUT_MS)))
          } catch (e) {
            throw new Error(`client ${c}, first sync: ${e.message}`)
          } finally {
            // A handle that never became ready makes the stock shutdown (flush) throw.
            await repo.shutdown().catch(e => log(`client ${c}: shutdown: ${e.message}`))
          }
        })()
      )
    }
    await Promise.all(wave)
  }
  const initialSecs = (performance.now() - t1) / 1000
  // automerge-repo saves sync states through a throttle (100 ms); let the last saves land.
  await sleep(1000)
  const persisted = storages.reduce((n, s) => n + s.syncStates(serverSid), 0)
  globalThis.gc?.()
  log(`heap after the first sync: ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB`)
  log(`first sync of ${CLIENTS} clients in ${initialSecs.toFixed(1)} s; ${persisted}/${CLIENTS * docs} sync states persisted`)

  // 2a. The clients start again, offline: a new Repo over the same storage (same storage id, a
  //     new random peer id, as a restarted app) loads its documents from storage.
  const t2 = performance.now()
  const repos = []
  for (let c = 0; c < CLIENTS; c++) {
    const repo = new Repo({ storage: storages[c], network: [] })
    repos.push(repo)
    await Promise.all(clientDocs(c).map(u => repo.find(u)))
  }
  const reopenSecs = (performance.now() - t2) / 1000
  globalThis.gc?.()
  log(`heap after reopening: ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB`)
  log(`${CLIENTS} clients reopened their documents from storage in ${reopenSecs.toFixed(1)} s`)

  // 2b. The reconnect: every client gets its network adapter (through the counting proxy) at once.
  const proxy = await startProxy(URL_BASE)
  process.stdout.write(JSON.stringify({ event: "reconnect" }) + "\n")
  counts.on = true
  const t0 = performance.now()
  counts.t0 = t0
  counts.lastFrame = t0
  repos.forEach((repo, c) => {
    repo.networkSubsystem.addNetworkAdapter(new Adapter(withToken(proxy.url, `bench-c${c}`), 1000))
  })
  const deadline = t0 + TIMEOUT_MS
  let quietSecs = null
  for (;;) {
    await sleep(20)
    const now = performance.now()
    if (counts.connected >= CLIENTS && now - counts.lastFrame >= QUIET_MS) {
      quietSecs = (counts.lastFrame - t0) / 1000
      break
    }
    if (now > deadline) {
      errors.push(`not quiet after ${TIMEOUT_MS / 1000} s (connected ${counts.connected}/${CLIENTS})`)
      break
    }
  }
  counts.on = false
  const total = CLIENTS * docs
  const result = {
    event: "result",
    clients: CLIENTS,
    docs,
    pool: POOL,
    docs_total: total,
    persisted_sync_states: persisted,
    initial_secs: initialSecs,
    reopen_secs: reopenSecs,
    quiet_secs: quietSecs,
    clients_connected: counts.connected,
    docs_without_server_sync: total - counts.heard.size,
    up: counts.up,
    down: counts.down,
    errors: [...errors, ...proxy.errors],
  }
  process.stdout.write(JSON.stringify(result) + "\n")
  log(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  await Promise.all(repos.map(r => r.shutdown().catch(() => {})))
  proxy.close()
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e)
    process.exit(1)
  }
)
