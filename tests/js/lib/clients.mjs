// Stock automerge-repo clients for the interop tests: a `Repo` with one `WebSocketClientAdapter`
// and no storage (a fresh client is a new phone), plus helpers to build schema v1 proposals, find
// the district index and wait for the server's acknowledgement.

import assert from "node:assert/strict"
import { createHash } from "node:crypto"

import { Repo, cbor, parseAutomergeUrl, splice, stringifyAutomergeUrl } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

import { waitFor, within } from "./server.mjs"

export { splice }

/**
 * The stock client adapter, with three test-only additions that leave the protocol untouched: it
 * records a one-line summary of every frame in both directions (for failure messages;
 * `MINKA_JS_TRACE=1` also prints them live), a closed client stays closed, and socket errors the
 * stock adapter would rethrow are recorded instead (see below).
 */
class TracingAdapter extends WebSocketClientAdapter {
  frames = []
  /** How many times a socket of this adapter opened / was closed by the other side. */
  opens = 0
  closes = 0
  #closed = false
  /**
   * @param {string} url
   * @param {string} name
   * @param {{ reconnect?: boolean }} options `reconnect: false`: once the server closes the
   *   socket, stay closed (the stock adapter would reconnect after the retry interval).
   */
  constructor(url, name, { reconnect = true } = {}) {
    // A short retry interval: a reconnect timer the stock adapter arms when the server goes away
    // cannot be cancelled from outside, and it keeps node alive until it fires.
    super(url, 1_000)
    this.name = name
    // Note opens and closes (the stock handlers are arrow-function fields, wired up by connect()).
    const onOpen = this.onOpen
    this.onOpen = () => {
      this.opens++
      this.#note("!!", { type: "socket open" })
      onOpen()
    }
    const onClose = this.onClose
    this.onClose = () => {
      this.closes++
      this.#note("!!", { type: "socket closed" })
      if (!reconnect) this.#closed = true
      onClose()
    }
    // The stock handler rethrows any socket error but ECONNREFUSED (as an uncaught exception);
    // the tests SIGKILL the server under live sockets, so note such errors instead.
    const onError = this.onError
    this.onError = event => {
      const code = event?.error?.code
      if (code && code !== "ECONNREFUSED") this.#note("!!", { type: `socket error ${code}` })
      else onError(event)
    }
  }
  connect(peerId, peerMetadata) {
    // After disconnect() a reconnect timer armed by an earlier close may still fire; the stock
    // adapter would then reconnect (and keep the process alive). A closed client stays closed.
    if (this.#closed) return
    super.connect(peerId, peerMetadata)
  }
  disconnect() {
    this.#closed = true
    super.disconnect()
  }
  #note(dir, msg) {
    const line = `${this.name} ${dir} ${summary(msg)}`
    this.frames.push(line)
    if (this.frames.length > 500) this.frames.shift()
    if (process.env.MINKA_JS_TRACE) console.error(line)
  }
  send(message) {
    this.#note("->", message)
    super.send(message)
  }
  receiveMessage(bytes) {
    try {
      this.#note("<-", cbor.decode(new Uint8Array(bytes)))
    } catch (e) {
      this.#note("<-", { type: `undecodable (${e.message})` })
    }
    super.receiveMessage(bytes)
  }
}

function summary(m) {
  const parts = [m.type]
  if (m.documentId) parts.push(`doc=${m.documentId}`)
  if (m.data?.byteLength !== undefined) parts.push(`${m.data.byteLength}B`)
  if (m.message) parts.push(`message=${JSON.stringify(m.message)}`)
  if (m.type === "peer" || m.type === "join") parts.push(`peerMetadata=${JSON.stringify(m.peerMetadata)}`)
  return parts.join(" ")
}

/** A connected stock client. */
export class Client {
  #closed = false
  /**
   * @param {import("./server.mjs").MinkaServer} server
   * @param {string} token
   * @param {string} name for failure messages
   */
  /**
   * @param {import("./server.mjs").MinkaServer} server
   * @param {string} token
   * @param {string} name for failure messages
   * @param {{ peerId?: string, offline?: boolean, reconnect?: boolean }} options `peerId`: the
   *   Repo's peer id (default random); `offline`: start with no network (documents created now
   *   sync when `goOnline()` adds the adapter, like a phone coming back online); `reconnect:
   *   false`: do not reconnect after the server closes the socket.
   */
  constructor(server, token, name, { peerId, offline = false, reconnect = true } = {}) {
    this.name = name
    this.adapter = new TracingAdapter(server.syncUrl(token), name, { reconnect })
    this.repo = new Repo({ network: offline ? [] : [this.adapter], peerId, sharePolicy: async () => true })
    this.online = !offline
  }

  /** Connects a client created `offline` (the stock Repo's network subsystem adds the adapter). */
  goOnline() {
    if (this.online) return
    this.online = true
    this.repo.networkSubsystem.addNetworkAdapter(this.adapter)
  }

  /** Waits until the server's `peer` answer arrived. */
  async connected(ms = 10_000) {
    await waitFor(() => this.repo.peers.length > 0, `${this.name} to get the server's peer message`, ms)
    return this
  }

  get serverPeerId() {
    return this.repo.peers[0]
  }

  /** The storage id the server announced in its `peer` message. */
  get serverStorageId() {
    return this.repo.peerMetadataByPeerId[this.serverPeerId]?.storageId
  }

  /** The heads the server last told this client it has for `handle` (its sync reply). */
  serverHeads(handle) {
    const sid = this.serverStorageId
    return sid ? handle.getSyncInfo(sid)?.lastHeads : undefined
  }

  /** Waits until the server has acknowledged `handle`'s current heads. */
  async acknowledged(handle, ms = 10_000) {
    await waitFor(
      () => sameHeads(this.serverHeads(handle), handle.heads()),
      `${this.name}: server to acknowledge heads ${JSON.stringify(handle.heads())} ` +
        `(server reported ${JSON.stringify(this.serverHeads(handle))})`,
      ms
    )
  }

  frames() {
    return this.adapter.frames.join("\n")
  }

  async close() {
    if (this.#closed) return
    this.#closed = true
    await this.repo.shutdown()
  }
}

export function sameHeads(a, b) {
  if (!a || !b || a.length !== b.length) return false
  const sa = [...a].sort()
  const sb = [...b].sort()
  return sa.every((h, i) => h === sb[i])
}

/** A schema v1 proposal of Comas (150110) created by `createdBy`. */
export function proposal(createdBy, { coauthors = [], title = "Veredas en Collique", district = "150110" } = {}) {
  return {
    type: "proposal",
    schemaVersion: 1,
    district,
    processYear: 2027,
    title,
    description: "Construcción de veredas en la zona de Collique.",
    zone: "Collique",
    category: "vías y veredas",
    beneficiaries: 1200,
    estimatedCost: 35_000_000,
    cofinancing: 0,
    status: "draft",
    createdBy,
    coauthors: Object.fromEntries(coauthors.map(u => [u, true])),
    supporters: {},
    comments: [],
    evaluation: {},
    scores: {},
  }
}

/** Appends `text` to the Text field `field` (a splice, so concurrent appends both survive). */
export function appendText(handle, field, text) {
  handle.change(d => {
    splice(d, [field], String(d[field]).length, 0, text)
  })
}

/** `automerge:` URL of the index of `district` and `year`: first 16 bytes of SHA-256, base58check. */
export function indexUrl(district, year) {
  const digest = createHash("sha256").update(`minka:index:v1:${district}:${year}`).digest()
  return stringifyAutomergeUrl(new Uint8Array(digest.subarray(0, 16)))
}

/** Plain JSON of a document (Text and strings alike become strings). */
export const plain = doc => JSON.parse(JSON.stringify(doc))

// ---- write authorization helpers (tests/js/write-auth.test.mjs) ----

export { decodeHeads } from "@automerge/automerge-repo"

/**
 * A schema v1 acta of Comas (150110), status `draft`, created by `createdBy` (a tecnico).
 * `attendees` maps user id -> `{ name, organization, votes }`.
 */
export function acta(
  createdBy,
  {
    attendees = {
      ana: { name: "Ana", organization: "Junta vecinal Collique", votes: true },
      beto: { name: "Beto", organization: "Club de madres El Retablo", votes: true },
    },
    title = "Acta del taller de diagnóstico",
    kind = "workshop",
    district = "150110",
  } = {}
) {
  return {
    type: "acta",
    schemaVersion: 1,
    district,
    processYear: 2027,
    title,
    kind,
    date: "2027-03-14",
    place: "Local comunal de Collique",
    createdBy,
    attendees,
    agreements: [],
    prioritized: [],
    committeeMembers: {},
    signatures: {},
    status: "draft",
  }
}

/** A schema v1 process document (ceilings) of Comas (150110) for 2027, written by an admin. */
export function processDoc({ ceiling = 100_000_000, zones = { Collique: 60_000_000 }, district = "150110" } = {}) {
  return {
    type: "process",
    schemaVersion: 1,
    district,
    processYear: 2027,
    ceiling,
    zones,
    phase: "concertation",
    criteria: [],
  }
}

/**
 * The `message` of every `error` frame `client` received so far (the stock adapter only logs
 * them; they are read from the frames the tracing adapter recorded).
 */
export function errorMessages(client) {
  const out = []
  for (const line of client.adapter.frames) {
    const m = / <- error(?: doc=\S+)?(?: \d+B)? message=(".*")$/.exec(line)
    if (m) out.push(JSON.parse(m[1]))
  }
  return out
}

/** Waits for an `error` frame to `client` that names `documentId`; returns its message. */
export async function errorFor(client, documentId, ms = 10_000) {
  return waitFor(
    () => errorMessages(client).find(m => m.includes(documentId)),
    () => `${client.name} to receive an error frame naming ${documentId} (errors so far: ${JSON.stringify(errorMessages(client))})`,
    ms
  )
}

// ---- documents asked for before they exist (tests/js/late-docs.test.mjs, isolation.test.mjs) ----

/** The bare document id of an `automerge:` URL. */
export const docIdOf = url => parseAutomergeUrl(url).documentId

/**
 * `client` asks for `url` (the stock `repo.find`, which sends `request`) and must be told it is
 * unavailable; returns the handle, which the stock repo keeps in state `unavailable` (a later
 * `find` answers from that cache and never asks again).
 */
export async function findUnavailable(client, url, ms = 10_000) {
  const err = await within(
    client.repo.find(url).then(
      h => assert.fail(`${client.name} found ${url} (${JSON.stringify(plain(h.doc()))}); expected it unavailable`),
      e => e
    ),
    `${client.name}: find(${url}) to be answered unavailable`,
    ms
  )
  assert.match(String(err), /unavailable/, `${client.name}: find(${url})`)
  const handle = client.repo.handles[docIdOf(url)]
  assert.equal(handle?.state, "unavailable", `${client.name}: the handle of ${url}`)
  return handle
}

/** How many `sync` frames naming `documentId` the server sent to `client` so far. */
export const syncsReceived = (client, documentId) =>
  client.adapter.frames.filter(l => l.includes(` <- sync doc=${documentId} `)).length

/** The plain content of `handle` once it is ready, else undefined. */
export const contentOf = handle => (handle?.isReady() ? plain(handle.doc()) : undefined)

/** A schema-valid document's bytes, made in a scratch Repo that never connects (for `import`). */
export async function documentBytes(content) {
  const scratch = new Repo({ network: [] })
  const h = scratch.create(content)
  const bytes = await scratch.export(h.documentId)
  await scratch.shutdown()
  return bytes
}
