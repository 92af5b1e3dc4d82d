// A fresh phone with the stock client downloads its district: a new `Repo` (stock
// @automerge/automerge-repo 2.5.6 + WebSocketClientAdapter) finds the district index document
// (id derived as in lib/clients.mjs `indexUrl`), then `repo.find`s every document it lists and
// waits until all are ready. Driven by the SDK benchmark (tests/src/bin/sdk-bench.rs), which reads
// the server's /metrics around each phase; no counting happens here.
//
//   node bench-download.mjs --url ws://127.0.0.1:PORT/sync --token JWT [--storage DIR]
//        [--district 150110] [--year 2027] [--timeout-s 120]
//
// Without --storage the Repo has no storage adapter (phase "download" only). With --storage it
// has a NodeFSStorageAdapter in DIR, and on the driver's `restart` line it shuts the Repo down
// (flushing storage), then on `reconnect` starts a new Repo over a new adapter on the same DIR
// (a restarted app: same storage id, new peer id), finds the index and every listed document
// again (loaded from storage, synced with the server) and reports when all are ready.
//
// Protocol (one JSON line per event on stdout, one command per line on stdin):
//   -> {"event":"ready","phase":"download","secs":S,"docs":N,"cpu_secs":C}   all N listed
//      documents ready, S seconds and C CPU seconds of this process after `new Repo`
//   <- restart     -> {"event":"closed","sync_states":K}   K sync states persisted
//   <- reconnect   -> {"event":"ready","phase":"reconnect",...}
//   <- exit        (also on stdin EOF)
// Progress and errors go to stderr.

import { readdirSync } from "node:fs"
import path from "node:path"
import { performance } from "node:perf_hooks"
import { createInterface } from "node:readline"

import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

import { indexUrl } from "./lib/clients.mjs"

function parseArgs(argv) {
  const out = {}
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`)
    out[argv[i].slice(2)] = argv[i + 1]
  }
  return out
}
const args = parseArgs(process.argv.slice(2))
if (!args.url || !args.token) {
  console.error("usage: node bench-download.mjs --url ws://HOST:PORT/sync --token JWT [--storage DIR]")
  process.exit(2)
}
const URL_WITH_TOKEN = `${args.url}${args.url.includes("?") ? "&" : "?"}token=${encodeURIComponent(args.token)}`
const INDEX = indexUrl(args.district ?? "150110", parseInt(args.year ?? "2027", 10))
const TIMEOUT_MS = parseInt(args["timeout-s"] ?? "120", 10) * 1000

const log = (...m) => console.error(`[bench-download ${(performance.now() / 1000).toFixed(2)}s]`, ...m)
const emit = event => process.stdout.write(JSON.stringify(event) + "\n")

/** The stock adapter; once disconnected it stays closed (its retry timer cannot reopen it). */
class Adapter extends WebSocketClientAdapter {
  #closed = false
  connect(peerId, peerMetadata) {
    if (!this.#closed) super.connect(peerId, peerMetadata)
  }
  disconnect() {
    this.#closed = true
    if (this.socket) super.disconnect()
  }
}

function newRepo() {
  const network = [new Adapter(URL_WITH_TOKEN, 1000)]
  if (!args.storage) return new Repo({ network })
  // A new adapter instance: nothing cached in memory from the previous Repo.
  return new Repo({ network, storage: new NodeFSStorageAdapter(args.storage) })
}

function within(promise, what) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${TIMEOUT_MS / 1000} s: ${what}`)), TIMEOUT_MS)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

/** Finds the index, then every document it lists; resolves with how many. */
async function fetchDistrict(repo) {
  const index = await repo.find(INDEX)
  const ids = Object.keys(index.doc()?.docs ?? {})
  await Promise.all(ids.map(id => repo.find(`automerge:${id}`)))
  return ids.length
}

/** Sync states in the storage directory (automerge-repo saves them throttled per server). */
function syncStates(dir) {
  const marker = `${path.sep}sync-state${path.sep}`
  return readdirSync(dir, { recursive: true }).filter(f => `${path.sep}${f}`.includes(marker)).length
}

async function phase(name, repo, t0, cpu0) {
  const docs = await within(fetchDistrict(repo), `${name}: the index and every listed document`)
  // A Repo that loaded everything from storage is ready before it connected: wait for the
  // server's `peer` too, so the phase covers the reconnect itself.
  await within(
    (async () => {
      while (repo.peers.length === 0) await new Promise(r => setTimeout(r, 5))
    })(),
    `${name}: the server's peer message`
  )
  const secs = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  log(`${name}: ${docs} documents ready in ${secs.toFixed(2)} s`)
  emit({ event: "ready", phase: name, secs, docs, cpu_secs: (cpu.user + cpu.system) / 1e6 })
}

async function main() {
  let [t0, cpu0] = [performance.now(), process.cpuUsage()]
  let repo = newRepo()
  await phase("download", repo, t0, cpu0)
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    const cmd = line.trim()
    if (cmd === "exit") break
    if (cmd === "restart" && args.storage) {
      await repo.shutdown()
      emit({ event: "closed", sync_states: syncStates(args.storage) })
    } else if (cmd === "reconnect" && args.storage) {
      ;[t0, cpu0] = [performance.now(), process.cpuUsage()]
      repo = newRepo()
      await phase("reconnect", repo, t0, cpu0)
    } else {
      throw new Error(`unexpected command ${JSON.stringify(cmd)}`)
    }
  }
  await repo.shutdown().catch(() => {})
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e)
    process.exit(1)
  }
)
