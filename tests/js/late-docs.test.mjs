// A document asked for before it exists arrives when it appears, driven by stock
// @automerge/automerge-repo 2.5.6 clients over the real WebSocket.
//
// The stock client asks once: `repo.find(url)` sends `request`, the server answers
// `doc-unavailable`, the handle goes to state `unavailable`, `find` rejects, and every later
// `find` of that url answers from the cache without asking again. The handle still listens,
// though: a `sync` message with content for it moves it to `ready` (DocSynchronizer accepts sync
// messages in state `unavailable`; the update changes the heads, and DocHandle sends DOC_READY).
// So the server must keep such a peer waiting for the life of its connection and send the
// document once it exists and the peer may read it (DESIGN.md, wire protocol) — never to a peer of
// another district.
//
// Authors make documents OFFLINE (a Repo with no network adapter) so their urls are known before
// the server has them; `goOnline()` then adds the stock WebSocket adapter, and on the server's
// `peer` the repo syncs everything it holds, as a phone coming back online does.
//
// Run: cargo build -p minka-server --bin minka && cd tests/js && node --test --test-concurrency=1 ./late-docs.test.mjs
// (MINKA_BIN overrides the binary; MINKA_JS_TRACE=1 prints every frame; MINKA_TEST_LOG sets RUST_LOG.)

import assert from "node:assert/strict"
import { test } from "node:test"

import {
  contentOf,
  docIdOf,
  findUnavailable,
  indexUrl,
  plain,
  proposal,
  syncsReceived,
} from "./lib/clients.mjs"
import { withServer } from "./lib/scenario.mjs"
import { sleep, waitFor, within } from "./lib/server.mjs"

const STEP_MS = 10_000
const TEST_MS = 60_000
/** How long a negative check ("never arrives") waits after the positive control arrived. */
const QUIET_MS = 3_000

const VIG = { roles: ["vigilancia"] }
const ATE = { district: "150103" }

/** Waits until `handle` (kept from an unavailable `find`) is ready with `title`; returns its content. */
async function arrives(client, handle, title, ms = STEP_MS) {
  return waitFor(
    () => contentOf(handle)?.title === title && contentOf(handle),
    () =>
      `${client.name}: document ${handle.documentId}, asked for before it existed, to arrive with ` +
      `title ${JSON.stringify(title)} (handle state ${handle.state}, content ${JSON.stringify(contentOf(handle))}, ` +
      `sync frames received for it: ${syncsReceived(client, handle.documentId)})`,
    ms
  )
}

test("a district index asked for before it exists arrives when the first proposal creates it", { timeout: TEST_MS }, () =>
  withServer(async ({ connect }) => {
    const url = indexUrl("150110", 2027)
    const lea = await connect("lea")
    const index = await findUnavailable(lea, url)
    // The stock client does not ask again: a second find answers from its cache at once.
    await assert.rejects(lea.repo.find(url), /unavailable/)

    const leb = await connect("leb")
    const p = leb.repo.create(proposal("leb", { title: "Veredas en Collique" }))
    await leb.acknowledged(p)

    await waitFor(
      () => contentOf(index)?.docs?.[p.documentId],
      () =>
        `lea's index handle (asked for before it existed) to become ready and list ${p.documentId} ` +
        `(handle state ${index.state}, content ${JSON.stringify(contentOf(index))}, ` +
        `sync frames received for it: ${syncsReceived(lea, docIdOf(url))})`,
      STEP_MS
    )
    assert.equal(index.state, "ready")
    const d = plain(index.doc())
    assert.equal(d.type, "index")
    assert.equal(d.district, "150110")
    assert.equal(d.processYear, 2027)
    assert.equal(d.docs[p.documentId].type, "proposal")
    // The same handle is what find() now returns.
    assert.equal(await within(lea.repo.find(url), "find of the index once ready", STEP_MS), index)
  })
)

test("a proposal asked for before its author connected arrives when the author syncs", { timeout: TEST_MS }, () =>
  withServer(async ({ connect }) => {
    const title = "Losa deportiva en La Pascana"
    const author = await connect("beto", { offline: true })
    const mine = author.repo.create(proposal("beto", { title }))

    const ana = await connect("ana")
    const h = await findUnavailable(ana, mine.url)

    author.goOnline()
    await author.connected()
    await author.acknowledged(mine)

    const d = await arrives(ana, h, title)
    assert.deepEqual(d, plain(mine.doc()))
    assert.deepEqual(h.heads(), mine.heads())
  })
)

test("a reviewer who asked for 200 proposals before their authors synced receives all of them", { timeout: 90_000 }, () =>
  withServer(async ({ connect }) => {
    const AUTHORS = 4
    const PER_AUTHOR = 50
    const authors = []
    const made = []
    for (let a = 0; a < AUTHORS; a++) {
      const sub = `autor-${a}`
      const c = await connect(sub, { offline: true })
      authors.push(c)
      for (let i = 0; i < PER_AUTHOR; i++) {
        made.push(c.repo.create(proposal(sub, { title: `Propuesta ${a}-${i} de ${sub}` })))
      }
    }
    const titles = new Map(made.map(h => [h.documentId, plain(h.doc()).title]))

    const vig = await connect("vig", VIG)
    const results = await within(
      Promise.allSettled(made.map(h => vig.repo.find(h.url))),
      "the reviewer's 200 finds to be answered",
      STEP_MS * 2
    )
    const found = results.filter(r => r.status === "fulfilled")
    assert.equal(found.length, 0, "no proposal exists on the server yet")
    for (const r of results) assert.match(String(r.reason), /unavailable/)
    const handles = made.map(h => vig.repo.handles[h.documentId])
    assert.ok(handles.every(h => h?.state === "unavailable"), "all 200 handles unavailable")

    for (const c of authors) c.goOnline()
    await Promise.all(authors.map(c => c.connected()))

    // Everything arrives; fail early when nothing new arrived for a while.
    const have = () => handles.filter(h => contentOf(h)?.title === titles.get(h.documentId)).length
    const deadline = Date.now() + 60_000
    let last = -1
    let lastProgress = Date.now()
    for (;;) {
      const n = have()
      if (n === handles.length) break
      if (n !== last) {
        last = n
        lastProgress = Date.now()
      }
      const stalled = Date.now() - lastProgress > 15_000
      if (stalled || Date.now() > deadline) {
        const acked = made.filter(h => {
          const c = authors.find(a => a.repo.handles[h.documentId] === h)
          return JSON.stringify(c.serverHeads(h)) === JSON.stringify(h.heads())
        }).length
        assert.fail(
          `the reviewer received ${n} of ${handles.length} proposals it asked for before they existed ` +
            `(${stalled ? "no progress for 15 s" : "60 s elapsed"}; the server acknowledged ${acked} of ` +
            `${made.length} to their authors; reviewer handle states: ${JSON.stringify(countBy(handles, h => h.state))})`
        )
      }
      await sleep(100)
    }
    for (const h of handles) assert.equal(plain(h.doc()).title, titles.get(h.documentId))
  })
)

test("a leader of another district who asked for a proposal before it existed never receives it", { timeout: TEST_MS }, () =>
  withServer(async ({ connect }) => {
    const title = "Alumbrado en El Retablo"
    const author = await connect("ana", { offline: true })
    const mine = author.repo.create(proposal("ana", { title }))

    const ate = await connect("ate-leader", ATE)
    const comas = await connect("carla")
    const ateHandle = await findUnavailable(ate, mine.url)
    const comasHandle = await findUnavailable(comas, mine.url)

    author.goOnline()
    await author.connected()
    await author.acknowledged(mine)

    // The positive control: a Comas leader who asked the same way receives it.
    await arrives(comas, comasHandle, title)
    // The Ate leader does not, now or a little later (nor after a further edit).
    mine.change(d => {
      d.zone = "El Retablo"
    })
    await author.acknowledged(mine)
    await waitFor(() => contentOf(comasHandle)?.zone === "El Retablo", "the Comas leader to get the later edit", STEP_MS)
    await sleep(QUIET_MS)
    assert.equal(ateHandle.state, "unavailable", `the Ate leader's handle: ${JSON.stringify(contentOf(ateHandle))}`)
    assert.equal(syncsReceived(ate, mine.documentId), 0, "the server sent the Ate leader sync messages for a Comas proposal")
    await assert.rejects(ate.repo.find(mine.url), /unavailable/)
  })
)

function countBy(items, key) {
  const out = {}
  for (const x of items) out[key(x)] = (out[key(x)] ?? 0) + 1
  return out
}
