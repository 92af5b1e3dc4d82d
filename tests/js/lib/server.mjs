// Starts the real `minka` binary for the JS interop tests: an ephemeral port on 127.0.0.1, a
// temporary sled store, a random JWT secret; mints tokens with that secret; SIGKILL + restart on
// the same store; SIGTERM at the end.

import { spawn } from "node:child_process"
import { createHmac, randomBytes } from "node:crypto"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

const here = path.dirname(fileURLToPath(import.meta.url))

/** `$MINKA_BIN`, else `target/debug/minka` of the workspace (build it with cargo first). */
export const MINKA_BIN = process.env.MINKA_BIN
  ? path.resolve(process.env.MINKA_BIN)
  : path.resolve(here, "../../../target/debug/minka")

const START_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 15_000

const b64url = value =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url")

/** Signs an HS256 JWT (what `minka token` prints) with `secret`. */
export function signJwt(claims, secret) {
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}`
  const sig = createHmac("sha256", secret).update(head).digest("base64url")
  return `${head}.${sig}`
}

export class MinkaServer {
  /** @type {import("node:child_process").ChildProcess | undefined} */
  #child
  #exited
  #log = []
  addr = ""
  dataDir = ""
  #tmp = ""
  secret = `minka-js-${randomBytes(16).toString("hex")}`

  /**
   * Starts a server on a fresh temporary store. `demo: true` first seeds the store with
   * `minka demo` (Comas, San Juan de Miraflores and Ate; same environment as the server).
   */
  static async start({ demo = false } = {}) {
    const s = new MinkaServer()
    s.#tmp = await mkdtemp(path.join(tmpdir(), "minka-js-"))
    s.dataDir = path.join(s.#tmp, "data")
    try {
      if (demo) s.#log.push((await run(MINKA_BIN, ["demo", "--data-dir", s.dataDir], s.env)).trim())
      await s.#spawn()
    } catch (e) {
      await s.stop()
      throw e
    }
    return s
  }

  get env() {
    return { ...process.env, MINKA_JWT_SECRET: this.secret, RUST_LOG: process.env.MINKA_TEST_LOG ?? "info" }
  }

  /** Everything the server processes of this instance wrote to stderr so far. */
  log() {
    return this.#log.join("\n")
  }

  /** The WebSocket sync URL with `token` in the query. */
  syncUrl(token) {
    return `ws://${this.addr}/sync?token=${encodeURIComponent(token)}`
  }

  /** A token for `sub` (HS256 with this server's secret, valid one hour). */
  token({ sub, roles = ["leader"], district = "150110", name = `Usuario ${sub}`, ttlSeconds = 3600 }) {
    const iat = Math.floor(Date.now() / 1000)
    return signJwt({ sub, name, roles, district, iat, exp: iat + ttlSeconds }, this.secret)
  }

  /** The same token minted by `minka token` (checks the CLI and our signing agree). */
  async cliToken({ sub, roles = ["leader"], district = "150110", name = `Usuario ${sub}` }) {
    const out = await run(MINKA_BIN, ["token", "--sub", sub, "--name", name, "--roles", roles.join(","), "--district", district], this.env)
    return out.trim().split(/\s+/).pop()
  }

  async #spawn() {
    this.addr = ""
    const child = spawn(MINKA_BIN, ["serve", "--listen", "127.0.0.1:0", "--data-dir", this.dataDir], {
      env: this.env,
      stdio: ["ignore", "ignore", "pipe"],
    })
    this.#child = child
    this.#exited = new Promise(resolve => child.once("exit", (code, signal) => resolve({ code, signal })))
    const addr = new Promise((resolve, reject) => {
      let buf = ""
      child.stderr.setEncoding("utf8")
      child.stderr.on("data", chunk => {
        buf += chunk
        let nl
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl)
          buf = buf.slice(nl + 1)
          this.#log.push(line)
          const m = /listen=(127\.0\.0\.1:\d+)/.exec(line)
          if (m) resolve(m[1])
        }
      })
      child.once("error", reject)
      child.once("exit", (code, signal) =>
        reject(new Error(`minka exited before listening (code ${code}, signal ${signal}); log:\n${this.log()}`))
      )
    })
    this.addr = await within(addr, `minka to report its address; log:\n${this.log()}`, START_TIMEOUT_MS)
    const deadline = Date.now() + START_TIMEOUT_MS
    for (;;) {
      try {
        const res = await fetch(`http://${this.addr}/healthz`, { signal: AbortSignal.timeout(2_000) })
        await res.arrayBuffer()
        if (res.status === 200) return
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`minka did not become healthy; log:\n${this.log()}`)
      await sleep(50)
    }
  }

  /** SIGKILL: no shutdown, no flush. */
  async kill9() {
    const child = this.#child
    this.#child = undefined
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    child.kill("SIGKILL")
    await this.#exited
  }

  /** SIGKILL, then start again on the same data directory (the port changes). */
  async restart() {
    await this.kill9()
    this.#log.push("---- restart ----")
    await this.#spawn()
  }

  /** SIGTERM and wait for the exit (SIGKILL after a timeout); removes the temporary store. */
  async stop() {
    const child = this.#child
    this.#child = undefined
    let result
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM")
      try {
        result = await within(this.#exited, "minka to exit after SIGTERM", STOP_TIMEOUT_MS)
      } catch (e) {
        child.kill("SIGKILL")
        await this.#exited
        throw e
      }
    }
    if (this.#tmp) await rm(this.#tmp, { recursive: true, force: true })
    return result
  }
}

function run(bin, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout.on("data", d => (out += d))
    child.stderr.on("data", d => (err += d))
    child.once("error", reject)
    child.once("exit", code =>
      code === 0 ? resolve(out) : reject(new Error(`${bin} ${args.join(" ")} failed (${code}): ${err}`))
    )
  })
}

export const sleep = ms => new Promise(r => setTimeout(r, ms))

/** Races `promise` against a timeout that fails with `timed out: <what>`. */
export function within(promise, what, ms) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Polls `fn` (sync or async) until it returns a truthy value; after `ms` fails with `what` (a
 * string, or a function called then, to show the state at the time of the failure).
 */
export async function waitFor(fn, what, ms = 10_000, every = 20) {
  const deadline = Date.now() + ms
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) {
      const text = typeof what === "function" ? what() : what
      throw new Error(`timed out after ${ms} ms: ${text}${last ? ` (last error: ${last.message})` : ""}`)
    }
    await sleep(every)
  }
}

/**
 * An HTTP request to `server` with `Authorization: Bearer <token>`; resolves to
 * `{ status, body }` (`body` parsed as JSON when it is JSON, else the text).
 */
export async function api(server, method, path, token, ms = 10_000) {
  const res = await fetch(`http://${server.addr}${path}`, {
    method,
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal: AbortSignal.timeout(ms),
  })
  const text = await res.text()
  let body = text
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON
  }
  return { status: res.status, body }
}

/**
 * Polls `GET /api/v1/quarantine` as `who` (token claims; a vigilancia user of 150110 unless told
 * otherwise) until it lists change `hash`; returns the entry.
 */
export async function quarantined(server, hash, who = { sub: "vig-http", roles: ["vigilancia"] }, ms = 10_000) {
  const token = server.token(who)
  let last
  return waitFor(
    async () => {
      const res = await api(server, "GET", "/api/v1/quarantine", token)
      last = res
      if (res.status !== 200) throw new Error(`GET /api/v1/quarantine: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body.items.find(e => e.hash === hash)
    },
    () => `the quarantine to list change ${hash} for ${JSON.stringify(who)} (last answer: ${JSON.stringify(last)})`,
    ms
  )
}
