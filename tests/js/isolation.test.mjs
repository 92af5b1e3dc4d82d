// District isolation driven by stock @automerge/automerge-repo 2.5.6 clients over the real
// WebSocket: index ids are reserved for the server (a document a peer plants at one is refused,
// quarantined and never served as the index), a peer of another district that asked for a
// document before it existed never gets it, and a peer id cannot be taken over by another user.
//
// Planting uses the stock `repo.import(bytes, { docId })`: the handle is ready at once and the
// repo announces it with a `sync` carrying its heads (no `request`), as a phone that received the
// document out of band would.
//
// Run: cargo build -p minka-server --bin minka && cd tests/js && node --test --test-concurrency=1 ./isolation.test.mjs
// (MINKA_BIN overrides the binary; MINKA_JS_TRACE=1 prints every frame; MINKA_TEST_LOG sets RUST_LOG.)

import assert from "node:assert/strict"
import { randomBytes } from "node:crypto"
import { test } from "node:test"

import { generateAutomergeUrl } from "@automerge/automerge-repo"

import {
  appendText,
  contentOf,
  decodeHeads,
  docIdOf,
  documentBytes,
  errorFor,
  errorMessages,
  findUnavailable,
  indexUrl,
  plain,
  proposal,
  syncsReceived,
} from "./lib/clients.mjs"
import { withServer } from "./lib/scenario.mjs"
import { api, quarantined, sleep, waitFor, within } from "./lib/server.mjs"

const STEP_MS = 10_000
const TEST_MS = 60_000
/** How long a negative check ("never arrives") waits after the positive control arrived. */
const QUIET_MS = 3_000

const VIG = { roles: ["vigilancia"] }
const ATE = { district: "150103" }

/**
 * A fresh client of `who` asks for the index `url`: it must be unavailable, or be the server's
 * index (type "index", no proposal fields). Returns the content, or undefined when unavailable.
 */
async function indexAsSeenBy(connect, url, sub, who) {
  const c = await connect(sub, who)
  let handle
  try {
    handle = await within(c.repo.find(url), `${sub} to be answered for ${url}`, STEP_MS)
  } catch (e) {
    assert.match(String(e), /unavailable/, `${sub}: find(${url})`)
    return undefined
  }
  const d = plain(handle.doc())
  assert.equal(d.type, "index", `${sub} got a document at the index id that is not the index: ${JSON.stringify(d)}`)
  assert.equal(d.title, undefined, `the index carries a planted title: ${JSON.stringify(d)}`)
  return d
}

/** Polls fresh clients of `who` until the index `url` lists `documentId`; returns the index. */
async function indexListing(connect, url, documentId, who) {
  let n = 0
  let last
  return waitFor(
    async () => {
      last = await indexAsSeenBy(connect, url, `fresh-${n++}`, who)
      return last?.docs?.[documentId] && last
    },
    () => `the index ${url} to list ${documentId} (last seen: ${JSON.stringify(last)})`,
    STEP_MS,
    200
  )
}

/**
 * A Comas leader plants a valid Comas proposal at the index id of `district`/`year`: refused with
 * an error naming the document and saying it is reserved / an index, and quarantined.
 */
async function plantAtIndex({ server, connect }, district, year) {
  const url = indexUrl(district, year)
  const id = docIdOf(url)
  const mallory = await connect("mallory")
  const bytes = await documentBytes(proposal("mallory", { title: "Toma del índice" }))
  const planted = mallory.repo.import(bytes, { docId: id })
  assert.equal(planted.state, "ready", "the stock import is ready locally at once")
  assert.equal(planted.documentId, id)
  const [hash] = decodeHeads(planted.heads())

  const msg = await errorFor(mallory, id)
  assert.match(msg, /index|reserved/i, msg)
  // The writer and a province-wide reviewer see the rejected change in the quarantine.
  const entry = await quarantined(server, hash, { sub: "mallory" })
  assert.equal(entry.documentId, id, JSON.stringify(entry))
  assert.equal(entry.user, "mallory", JSON.stringify(entry))
  assert.match(entry.reason, /index|reserved/i, JSON.stringify(entry))
  await quarantined(server, hash, { sub: "rev", ...VIG, district: "*" }, 2_000)
  // One error for the one refused change: no sync loop around it.
  await sleep(500)
  assert.equal(errorMessages(mallory).filter(m => m.includes(id)).length, 1, JSON.stringify(errorMessages(mallory)))
  return { url, id, hash, mallory }
}

test("a leader cannot plant a document at another district's index id", { timeout: TEST_MS }, () =>
  withServer(async ctx => {
    const { connect } = ctx
    const { url, id, mallory } = await plantAtIndex(ctx, "150103", 2028)

    // An Ate leader asking for the Ate 2028 index does not get the planted proposal.
    const before = await indexAsSeenBy(connect, url, "ate-1", ATE)
    assert.ok(!before || !Object.keys(before.docs ?? {}).length, `the Ate 2028 index before any Ate document: ${JSON.stringify(before)}`)

    // Once an Ate leader creates a 2028 proposal, the index the server writes there is Ate's.
    const ate = await connect("ate-leader", ATE)
    const mine = ate.repo.create({
      ...proposal("ate-leader", { district: "150103", title: "Pistas en Ate" }),
      processYear: 2028,
    })
    await ate.acknowledged(mine)
    const index = await indexListing(connect, url, mine.documentId, ATE)
    assert.equal(index.district, "150103")
    assert.equal(index.processYear, 2028)
    assert.deepEqual(Object.keys(index.docs), [mine.documentId])
    // The planter (a Comas leader) never receives Ate's index merged into her copy at that id.
    await sleep(500)
    const hers = contentOf(mallory.repo.handles[id])
    assert.equal(hers?.docs, undefined, `the planter received the Ate index: ${JSON.stringify(hers)}`)
  })
)

test("a leader cannot plant a document at its own district's index id", { timeout: TEST_MS }, () =>
  withServer(async ctx => {
    const { connect } = ctx
    const { url, hash } = await plantAtIndex(ctx, "150110", 2027)
    // The district's vigilancia sees the refused change too.
    await quarantined(ctx.server, hash, { sub: "vig", ...VIG }, 2_000)

    const before = await indexAsSeenBy(connect, url, "carla", {})
    assert.ok(!before || !Object.keys(before.docs ?? {}).length, `the Comas index before any proposal: ${JSON.stringify(before)}`)

    // The index the server writes after a real proposal is the server's, listing only it.
    const ana = await connect("ana")
    const p = ana.repo.create(proposal("ana", { title: "Veredas en Collique" }))
    await ana.acknowledged(p)
    const index = await indexListing(connect, url, p.documentId, {})
    assert.equal(index.district, "150110")
    assert.equal(index.processYear, 2027)
    assert.deepEqual(Object.keys(index.docs), [p.documentId])
  })
)

test("a leader of another district who asked for an id before it was created never receives it", { timeout: TEST_MS }, () =>
  withServer(async ({ connect }) => {
    // The id is chosen first; the Comas leader creates her proposal at it later (stock import).
    const url = generateAutomergeUrl()
    const id = docIdOf(url)
    const ate = await connect("ate-leader", ATE)
    const carla = await connect("carla")
    const ateHandle = await findUnavailable(ate, url)
    const carlaHandle = await findUnavailable(carla, url)

    const ana = await connect("ana")
    const title = "Parque en Collique"
    const mine = ana.repo.import(await documentBytes(proposal("ana", { title })), { docId: id })
    await ana.acknowledged(mine)
    assert.deepEqual(errorMessages(ana), [])

    // The positive control: the Comas leader who asked the same way receives it.
    await waitFor(
      () => contentOf(carlaHandle)?.title === title,
      () => `carla to receive ${id}, asked for before it existed (handle state ${carlaHandle.state})`,
      STEP_MS
    )
    const ateNow = { state: ateHandle.state, syncs: syncsReceived(ate, id) }
    // A later edit reaches Comas, still not Ate.
    appendText(mine, "description", " Con juegos para niños.")
    await ana.acknowledged(mine)
    await waitFor(
      () => /juegos para niños/.test(contentOf(carlaHandle)?.description ?? ""),
      "carla to get the later edit",
      STEP_MS
    )
    await sleep(QUIET_MS)
    assert.deepEqual(ateNow, { state: "unavailable", syncs: 0 }, "right after creation the Ate leader got nothing")
    assert.equal(ateHandle.state, "unavailable", `the Ate leader's handle: ${JSON.stringify(contentOf(ateHandle))}`)
    assert.equal(syncsReceived(ate, id), 0, "the server sent the Ate leader sync messages for a Comas proposal")
    // Asking again (a new phone of the same Ate leader) is answered unavailable too.
    const ate2 = await connect("ate-leader", { ...ATE, name: "ate-leader-2" })
    await findUnavailable(ate2, url)
  })
)

test("another user's join with a connected peer id disturbs nobody; the same user's new connection replaces the old", { timeout: TEST_MS }, () =>
  withServer(async ({ connect }) => {
    const peerId = `peer-compartido-${randomBytes(6).toString("hex")}`
    // The original holder does not reconnect on its own once closed (the stock adapter would,
    // and would then fight the replacement in the last part).
    const ana = await connect("ana", { peerId, name: "ana-1", reconnect: false })
    assert.equal(ana.repo.peerId, peerId)
    const carla = await connect("carla")
    const a = ana.repo.create(proposal("ana", { title: "Muro de contención" }))
    await ana.acknowledged(a)
    const c = await within(carla.repo.find(a.url), "carla to find ana's proposal", STEP_MS)

    // Another user joins with ana's peer id: a peer id is not an identity, so neither ana is
    // disconnected (a hijack) nor is beto refused (he could otherwise squat ana's id and lock
    // her out of every reconnect): both connections live side by side as who they are.
    const beto = await connect("beto", { peerId, reconnect: false })
    await sleep(1_000)
    assert.equal(ana.adapter.closes, 0, "ana's connection was closed by another user's join with her peer id")
    assert.equal(ana.repo.peers.length, 1, "ana still has the server as a peer")
    assert.equal(beto.adapter.closes, 0, "beto's own connection was closed")
    assert.deepEqual(errorMessages(beto), [], "beto got an error for a peer id in use by someone else")

    // Ana keeps syncing: her edit after beto's join reaches carla.
    appendText(a, "description", " Tramo 1.")
    await ana.acknowledged(a)
    await waitFor(() => /Tramo 1\./.test(plain(c.doc()).description), "carla to see ana's edit after beto's join", STEP_MS)

    // Beto writes as beto, not as ana: his own proposal syncs; an edit to ana's is rejected as his.
    const b = beto.repo.create(proposal("beto", { title: "Propuesta de beto" }))
    await beto.acknowledged(b)
    const cb = await within(carla.repo.find(b.url), "carla to find beto's proposal", STEP_MS)
    assert.equal(plain(cb.doc()).createdBy, "beto")
    const ab = await within(beto.repo.find(a.url), "beto to read ana's proposal (same district)", STEP_MS)
    ab.change(d => { d.zone = "La Pascana" })
    const err = await errorFor(beto, a.documentId)
    assert.match(err, /author/i, `beto's edit of ana's proposal: ${err}`)
    await beto.close()

    // Ana's second phone, same peer id and same user: it replaces the first connection.
    const ana2 = await connect("ana", { peerId, name: "ana-2", reconnect: false })
    await waitFor(() => ana.adapter.closes > 0, "ana's first connection to be closed when her new one joins", STEP_MS)
    const a2 = await within(ana2.repo.find(a.url), "ana's new connection to find her proposal", STEP_MS)
    await waitFor(() => /Tramo 1\./.test(plain(a2.doc()).description), "ana's new connection to have her edit", STEP_MS)
    appendText(a2, "description", " Tramo 2.")
    await ana2.acknowledged(a2)
    await waitFor(() => /Tramo 2\./.test(plain(c.doc()).description), "carla to see the edit from ana's new connection", STEP_MS)
    assert.equal(ana2.adapter.closes, 0, "ana's new connection stays up")
  })
)
