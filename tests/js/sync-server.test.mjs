// Interop tests: the real `minka serve` with stock @automerge/automerge-repo 2.5.6 clients
// (Repo + WebSocketClientAdapter, no storage). Each test starts its own server on 127.0.0.1 with
// an ephemeral port and a temporary sled store (lib/server.mjs).
//
// Run: cargo build -p minka-server --bin minka && cd tests/js && node --test --test-concurrency=1 ./*.test.mjs
// (MINKA_BIN overrides the binary; MINKA_JS_TRACE=1 prints every frame; MINKA_TEST_LOG sets RUST_LOG.)

import assert from "node:assert/strict"
import { test } from "node:test"

import { appendText, indexUrl, plain, proposal, sameHeads, splice } from "./lib/clients.mjs"
import { withServer } from "./lib/scenario.mjs"
import { sleep, waitFor, within } from "./lib/server.mjs"

const STEP_MS = 10_000
const TEST_MS = 60_000
const now = () => Math.floor(Date.now() / 1000)

test("two stock clients edit one proposal concurrently and converge through minka", { timeout: TEST_MS }, () =>
  withServer(async ({ connect }) => {
    const ana = await connect("u-ana")
    const beto = await connect("u-beto")
    const a = ana.repo.create(proposal("u-ana", { coauthors: ["u-beto"] }))
    await ana.acknowledged(a)
    const b = await within(beto.repo.find(a.url), "the coauthor to find the new proposal", STEP_MS)
    assert.deepEqual(plain(b.doc()), plain(a.doc()))
    const base = a.heads()

    // Both edit in the same tick: neither can have seen the other's change.
    const at = now()
    appendText(a, "description", " Tramo A: jirón Los Olivos.")
    a.change(d => splice(d, ["title"], 0, 0, "Nuevas "))
    appendText(b, "description", " Tramo B: avenida Revolución.")
    b.change(d => {
      d.supporters["u-beto"] = at
      d.comments.push({ author: "u-beto", text: "Apoyo la propuesta del tramo B.", at })
    })
    assert.ok(!sameHeads(a.heads(), b.heads()), "the edits are concurrent")

    await waitFor(
      () => sameHeads(a.heads(), b.heads()),
      () => `both clients to converge (a ${JSON.stringify(a.heads())}, b ${JSON.stringify(b.heads())})`,
      STEP_MS
    )
    // Two heads: the tips of the two concurrent branches, merged.
    assert.equal(a.heads().length, 2)
    assert.ok(!a.heads().some(h => base.includes(h)))
    await ana.acknowledged(a)
    await beto.acknowledged(b)

    for (const [who, h] of [["ana", a], ["beto", b]]) {
      const d = plain(h.doc())
      assert.match(d.description, /Tramo A: jirón Los Olivos\./, `${who} has ana's edit`)
      assert.match(d.description, /Tramo B: avenida Revolución\./, `${who} has beto's edit`)
      assert.equal(d.title, "Nuevas Veredas en Collique", `${who} title`)
      assert.deepEqual(d.supporters, { "u-beto": at }, `${who} supporters`)
      assert.deepEqual(d.comments, [{ author: "u-beto", text: "Apoyo la propuesta del tramo B.", at }])
    }
    assert.deepEqual(plain(a.doc()), plain(b.doc()))
  })
)

test("a client connecting later finds the district's proposals through the index", { timeout: TEST_MS }, () =>
  withServer(async ({ connect }) => {
    const ana = await connect("u-ana")
    const titles = ["Veredas en Collique", "Losa deportiva en La Pascana", "Alumbrado en El Retablo"]
    const created = titles.map(title => ana.repo.create(proposal("u-ana", { title })))
    for (const h of created) await ana.acknowledged(h)
    const ids = created.map(h => h.documentId)

    const url = indexUrl("150110", 2027)
    // The server writes the index asynchronously after each creation: poll with fresh clients
    // (a client that saw an older index or none is simply replaced, like a new phone).
    let carla
    let index
    await waitFor(
      async () => {
        await carla?.close()
        carla = await connect("u-carla")
        const h = await within(carla.repo.find(url), "find the index", STEP_MS).catch(() => undefined)
        index = h && plain(h.doc())
        return ids.every(id => index?.docs?.[id])
      },
      () => `the index ${url} to list ${ids.join(", ")} (last seen: ${JSON.stringify(index)})`,
      STEP_MS,
      100
    )
    assert.equal(index.type, "index")
    assert.equal(index.district, "150110")
    assert.equal(index.processYear, 2027)
    for (const id of ids) {
      assert.equal(index.docs[id].type, "proposal")
      assert.equal(typeof index.docs[id].createdAt, "number")
    }
    for (const [i, id] of Object.keys(index.docs).filter(id => ids.includes(id)).entries()) {
      const h = await within(carla.repo.find(`automerge:${id}`), `find listed document ${id}`, STEP_MS)
      const mine = created.find(c => c.documentId === id)
      assert.deepEqual(plain(h.doc()), plain(mine.doc()), `document ${i} arrives with its content`)
      assert.ok(sameHeads(h.heads(), mine.heads()))
    }
  })
)

test("acknowledged changes survive SIGKILL and reach a fresh client after restart", { timeout: TEST_MS }, () =>
  withServer(async ({ server, connect }) => {
    const N = 30
    const ana = await connect("u-ana")
    const beto = await connect("u-beto")
    const a = ana.repo.create(proposal("u-ana", { title: "Parque en Collique" }))
    await ana.acknowledged(a)
    const b = await within(beto.repo.find(a.url), "the observer to find the proposal", STEP_MS)
    for (let i = 0; i < N; i++) {
      appendText(a, "description", ` edición ${i};`)
      // Let some of them travel in separate sync messages.
      if (i % 3 === 0) await sleep(5)
    }
    const heads = a.heads()
    // The observer got every change relayed (relayed only after they were persisted), and the
    // server's own sync reply to the writer shows it has the heads (sent only once durable).
    await waitFor(() => sameHeads(b.heads(), heads), "the observer to see all changes", STEP_MS)
    await ana.acknowledged(a)

    await server.restart() // SIGKILL, then the same data dir on a new port
    await ana.close()
    await beto.close()
    const carla = await connect("u-carla")
    const c = await within(carla.repo.find(a.url), "a fresh client to find the proposal after restart", STEP_MS)
    assert.ok(sameHeads(c.heads(), heads), `heads after restart ${JSON.stringify(c.heads())} != ${JSON.stringify(heads)}`)
    assert.equal(c.history().length, N + 1, "the creation and the N edits, as separate changes")
    const d = plain(c.doc())
    for (let i = 0; i < N; i++) assert.ok(d.description.includes(` edición ${i};`), `edit ${i} survived`)
    assert.deepEqual(d, plain(a.doc()))
  })
)

test("changes acknowledged while a writer is busy survive a SIGKILL mid-stream", { timeout: TEST_MS }, () =>
  withServer(async ({ server, connect }) => {
    const ana = await connect("u-ana")
    const a = ana.repo.create(proposal("u-ana", { title: "Muro de contención" }))
    await ana.acknowledged(a)
    const created = a.heads()
    // Keep writing; kill the server while changes are in flight; whatever it acknowledged
    // before dying must be there after the restart.
    let i = 0
    const deadline = Date.now() + 400
    while (Date.now() < deadline) {
      appendText(a, "description", ` e${i++};`)
      await sleep(2)
    }
    const acked = ana.serverHeads(a)
    await server.kill9()
    assert.ok(acked?.length && !sameHeads(acked, created), "the server acknowledged some of the edits before the kill")
    await ana.close()
    await server.restart()
    const carla = await connect("u-carla")
    const c = await within(carla.repo.find(a.url), "a fresh client to find the proposal after restart", STEP_MS)
    // Every acknowledged head is in the restarted document's history.
    const known = new Set(c.history()?.flat() ?? [])
    for (const h of acked) assert.ok(known.has(h), `acknowledged head ${h} lost (made ${i} edits)`)
  })
)

test("ephemeral messages reach the other peer", { timeout: TEST_MS }, () =>
  withServer(async ({ connect }) => {
    const ana = await connect("u-ana")
    const beto = await connect("u-beto")
    const a = ana.repo.create(proposal("u-ana", { title: "Alumbrado", coauthors: ["u-beto"] }))
    await ana.acknowledged(a)
    const b = await within(beto.repo.find(a.url), "beto to find the proposal", STEP_MS)
    const got = new Promise(resolve => b.on("ephemeral-message", resolve))
    a.broadcast({ cursor: 12 })
    const ev = await within(got, "beto's handle to emit ephemeral-message", STEP_MS)
    assert.deepEqual(ev.message, { cursor: 12 })
    assert.equal(ev.senderId, ana.repo.peerId)
    assert.equal(ev.handle.documentId, a.documentId)
  })
)

test("another district's document is unavailable to a stock client", { timeout: TEST_MS }, () =>
  withServer(async ({ server, connect }) => {
    const ana = await connect("u-ana")
    const a = ana.repo.create(proposal("u-ana", { title: "Losa deportiva" }))
    await ana.acknowledged(a)

    // This token comes from `minka token` (the CLI signs with the server's secret).
    const sjmToken = await server.cliToken({ sub: "u-sjm", district: "150133" })
    const sjm = await connect("u-sjm", { token: sjmToken })
    const err = await within(
      sjm.repo.find(a.url).then(
        () => assert.fail("a San Juan de Miraflores leader got a Comas document"),
        e => e
      ),
      "find of another district's document to fail",
      STEP_MS
    )
    assert.match(String(err), /unavailable/)
    assert.equal(sjm.repo.handles[a.documentId]?.state, "unavailable")

    // The server still holds it for Comas: a new Comas phone gets it.
    const beto = await connect("u-beto")
    const b = await within(beto.repo.find(a.url), "a Comas leader to find the document", STEP_MS)
    assert.deepEqual(plain(b.doc()), plain(a.doc()))
  })
)
