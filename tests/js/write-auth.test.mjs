// Write authorization driven by stock @automerge/automerge-repo 2.5.6 clients over the real
// WebSocket: the server judges every incoming change (actor bound to the token's `sub`, the
// permission table of DESIGN.md); a rejected change never reaches the stored document or another
// peer, lands in the quarantine (`GET /api/v1/quarantine`), and its writer gets an `error` frame
// naming the document and the reason while its connection stays usable.
//
// Every user has their own Repo (one token per Repo: the server binds each Repo's actor ids to
// the sub of the token it first arrived with).
//
// Run: cargo build -p minka-server --bin minka && cd tests/js && node --test --test-concurrency=1 ./*.test.mjs
// (MINKA_BIN overrides the binary; MINKA_JS_TRACE=1 prints every frame; MINKA_TEST_LOG sets RUST_LOG.)

import assert from "node:assert/strict"
import { test } from "node:test"

import { encodeHeads } from "@automerge/automerge-repo"

import {
  acta,
  decodeHeads,
  errorMessages,
  plain,
  processDoc,
  proposal,
  sameHeads,
  splice,
} from "./lib/clients.mjs"
import { withServer } from "./lib/scenario.mjs"
import { api, quarantined, sleep, waitFor, within } from "./lib/server.mjs"

const STEP_MS = 10_000
const TEST_MS = 60_000
const now = () => Math.floor(Date.now() / 1000)

const TEC = { roles: ["tecnico"] }
const VIG = { roles: ["vigilancia"] }
const ADM = { roles: ["admin"] }

/** Applies `fn` to `handle` as one local change; returns that change's hash (hex). */
function change(handle, fn) {
  handle.change(fn)
  const heads = decodeHeads(handle.heads())
  assert.equal(heads.length, 1, "a local change is the document's only head")
  return heads[0]
}

/** Waits for the `error` frame about change `hash` of `handle`'s document; returns its message. */
async function rejection(client, handle, hash) {
  const message = await waitFor(
    () => errorMessages(client).find(m => m.includes(handle.documentId) && m.includes(hash)),
    () =>
      `${client.name} to receive an error frame naming ${handle.documentId} and change ${hash} ` +
      `(errors so far: ${JSON.stringify(errorMessages(client))})`,
    STEP_MS
  )
  return message
}

/** The errors `client` received about `handle`'s document. */
const errorsAbout = (client, handle) => errorMessages(client).filter(m => m.includes(handle.documentId))

/** Checks a quarantine entry of change `hash` of `handle`'s document written by `user`. */
function assertEntry(entry, { handle, hash, user, reason }) {
  assert.equal(entry.documentId, handle.documentId)
  assert.equal(entry.user, user)
  assert.equal(entry.hash, hash)
  assert.match(entry.reason, reason)
  assert.equal(typeof entry.path, "string")
  assert.match(entry.actor, /^[0-9a-f]+$/, "the actor id, hex")
  assert.match(entry.change, /^[0-9a-f]+$/, "the change bytes, hex")
  assert.ok(Math.abs(entry.time - now()) < 120, `quarantine time ${entry.time} is now`)
}

/** Whether change `hash` (hex) is in `handle`'s history. */
const hasChange = (handle, hash) => handle.history().flat().includes(encodeHeads([hash])[0])

/** A fresh vigilancia client downloads the document; returns its handle. */
async function freshCopy(connect, handle, sub = "vig-fresh") {
  const vig = await connect(sub, VIG)
  return within(vig.repo.find(handle.url), `${sub} to download ${handle.documentId}`, STEP_MS)
}

test("an author's title edit is relayed; another leader's is rejected, quarantined and not relayed", { timeout: TEST_MS }, () =>
  withServer(async ({ server, connect }) => {
    const ana = await connect("ana")
    const beto = await connect("beto")
    const carla = await connect("carla")

    const a = ana.repo.create(proposal("ana", { coauthors: ["beto"] }))
    await ana.acknowledged(a)
    const b = await within(beto.repo.find(a.url), "the coauthor to find the proposal", STEP_MS)

    // The creator edits her own proposal's title: accepted, relayed to the coauthor.
    const title = "Veredas y pistas en Collique"
    change(a, d => {
      d.title = title
    })
    await ana.acknowledged(a)
    await waitFor(() => plain(b.doc()).title === title, "the coauthor to see the author's title", STEP_MS)
    assert.deepEqual(errorsAbout(ana, a), [], "no error for the author's edit")

    // Another leader of the district (neither author nor coauthor) edits the title: rejected.
    const c = await within(carla.repo.find(a.url), "another leader to find (read) the proposal", STEP_MS)
    assert.equal(plain(c.doc()).title, title)
    const bad = change(c, d => splice(d, ["title"], 0, 0, "Carla dice: "))
    const msg = await rejection(carla, c, bad)
    assert.match(msg, /title/, msg)
    assertEntry(await quarantined(server, bad), { handle: a, hash: bad, user: "carla", reason: /title/ })

    // A later accepted edit by the author reaches the coauthor; the rejected one never does.
    change(a, d => splice(d, ["description"], d.description.length, 0, " Tramo 2: jirón Los Olivos."))
    await ana.acknowledged(a)
    await waitFor(() => sameHeads(b.heads(), a.heads()), "the coauthor to get the author's later edit", STEP_MS)
    for (const [who, h] of [["coauthor", b], ["author", a]]) {
      assert.equal(plain(h.doc()).title, title, `${who}'s title`)
      assert.ok(!hasChange(h, bad), `the rejected change reached the ${who}`)
    }
    const fresh = await freshCopy(connect, a)
    assert.ok(sameHeads(fresh.heads(), a.heads()), "the stored document has exactly the accepted changes")
    assert.ok(!hasChange(fresh, bad))
    assert.equal(plain(fresh.doc()).title, title)

    // The writer's connection still works: her own new proposal is accepted and found by URL.
    const mine = carla.repo.create(proposal("carla", { title: "Losa deportiva en La Pascana" }))
    await carla.acknowledged(mine)
    const seen = await within(beto.repo.find(mine.url), "the coauthor to find the other leader's new proposal", STEP_MS)
    assert.deepEqual(plain(seen.doc()), plain(mine.doc()))
    assert.deepEqual(errorsAbout(carla, mine), [], "no error for the writer's own proposal")
    // One error for the one rejected change: no sync loop around it.
    assert.equal(errorsAbout(carla, c).length, 1, JSON.stringify(errorMessages(carla)))
  })
)

test("a leader may add their own key to supporters, not someone else's", { timeout: TEST_MS }, () =>
  withServer(async ({ server, connect }) => {
    const ana = await connect("ana")
    const carla = await connect("carla")
    const a = ana.repo.create(proposal("ana", { title: "Alumbrado en El Retablo" }))
    await ana.acknowledged(a)
    const c = await within(carla.repo.find(a.url), "a supporter to find the proposal", STEP_MS)

    const at = now()
    change(c, d => {
      d.supporters.carla = at
    })
    await carla.acknowledged(c)
    await waitFor(() => plain(a.doc()).supporters.carla === at, "the author to see the new supporter", STEP_MS)
    assert.deepEqual(errorsAbout(carla, c), [])

    const bad = change(c, d => {
      d.supporters.beto = at
    })
    const msg = await rejection(carla, c, bad)
    assert.match(msg, /supporters/, msg)
    assertEntry(await quarantined(server, bad), { handle: a, hash: bad, user: "carla", reason: /own key in supporters/ })

    // The author's next edit reaches her; beto's key never does.
    change(a, d => splice(d, ["description"], 0, 0, "Urgente. "))
    await ana.acknowledged(a)
    assert.deepEqual(plain(a.doc()).supporters, { carla: at })
    assert.ok(!hasChange(a, bad))
    const fresh = await freshCopy(connect, a)
    assert.deepEqual(plain(fresh.doc()).supporters, { carla: at })
    assert.ok(sameHeads(fresh.heads(), a.heads()))
  })
)

test("only a tecnico may write evaluation.viable", { timeout: TEST_MS }, () =>
  withServer(async ({ server, connect }) => {
    const ana = await connect("ana")
    const beto = await connect("beto")
    const tec = await connect("tec", TEC)
    const a = ana.repo.create(proposal("ana", { coauthors: ["beto"], title: "Parque en Collique" }))
    await ana.acknowledged(a)
    const b = await within(beto.repo.find(a.url), "the coauthor to find the proposal", STEP_MS)

    // The author herself may not evaluate.
    const bad = change(a, d => {
      d.evaluation.viable = true
    })
    const msg = await rejection(ana, a, bad)
    assert.match(msg, /evaluation/, msg)
    assert.match(msg, /tecnico/, msg)
    assertEntry(await quarantined(server, bad), { handle: a, hash: bad, user: "ana", reason: /evaluation/ })

    // A tecnico may.
    const t = await within(tec.repo.find(a.url), "the tecnico to find the proposal", STEP_MS)
    assert.deepEqual(plain(t.doc()).evaluation, {}, "the tecnico's copy lacks the rejected evaluation")
    change(t, d => {
      d.evaluation.viable = true
      d.evaluation.evaluator = "tec"
    })
    await tec.acknowledged(t)
    assert.deepEqual(errorsAbout(tec, t), [])
    await waitFor(() => sameHeads(b.heads(), t.heads()), "the coauthor to get the tecnico's evaluation", STEP_MS)
    assert.deepEqual(plain(b.doc()).evaluation, { viable: true, evaluator: "tec" })
    assert.ok(!hasChange(b, bad), "the author's rejected evaluation reached the coauthor")
    const fresh = await freshCopy(connect, a)
    assert.ok(sameHeads(fresh.heads(), t.heads()))
    assert.ok(!hasChange(fresh, bad))
  })
)

test("a tecnico may create an acta; a leader may not", { timeout: TEST_MS }, () =>
  withServer(async ({ server, connect }) => {
    const tec = await connect("tec", TEC)
    const ana = await connect("ana")
    const vig = await connect("vig", VIG)

    const t = tec.repo.create(acta("tec"))
    await tec.acknowledged(t)
    assert.deepEqual(errorsAbout(tec, t), [])
    const v = await within(vig.repo.find(t.url), "vigilancia to find the tecnico's acta", STEP_MS)
    assert.deepEqual(plain(v.doc()), plain(t.doc()))

    const forged = ana.repo.create(acta("ana", { title: "Acta paralela" }))
    const [hash] = decodeHeads(forged.heads())
    const msg = await rejection(ana, forged, hash)
    assert.match(msg, /only tecnico may create an acta/, msg)
    // A province-wide reviewer sees it too (the district's own vigilancia: the test below).
    const entry = await quarantined(server, hash, { sub: "rev", ...VIG, district: "*" })
    assertEntry(entry, { handle: forged, hash, user: "ana", reason: /tecnico/ })

    // The server never stored it: to anyone else it does not exist.
    const err = await within(
      vig.repo.find(forged.url).then(
        () => assert.fail("vigilancia found the acta a leader created"),
        e => e
      ),
      "find of the rejected acta to fail",
      STEP_MS
    )
    assert.match(String(err), /unavailable/)
    const http = await api(server, "GET", `/api/v1/docs/${forged.documentId}`, server.token({ sub: "vig", ...VIG }))
    assert.equal(http.status, 404, JSON.stringify(http.body))
  })
)

test("a sealed acta accepts no change; a fresh client sees it sealed", { timeout: TEST_MS }, () =>
  withServer(async ({ server, connect }) => {
    const adm = await connect("adm", ADM)
    const tec = await connect("tec", TEC)
    const ana = await connect("ana")
    const beto = await connect("beto")
    const tecToken = server.token({ sub: "tec", ...TEC })

    // The district's process document (its ceilings): sealing checks the budget against it.
    const p = adm.repo.create(processDoc())
    await adm.acknowledged(p)
    assert.deepEqual(errorsAbout(adm, p), [])

    const t = tec.repo.create(acta("tec"))
    await tec.acknowledged(t)
    change(t, d => {
      d.agreements.push("Priorizar veredas en Collique")
    })
    change(t, d => {
      d.status = "signing"
    })
    await tec.acknowledged(t)
    assert.deepEqual(errorsAbout(tec, t), [], "the tecnico edits and opens signing")

    const seal = token => api(server, "POST", `/api/v1/docs/${t.documentId}/seal`, token)
    let res = await seal(tecToken)
    assert.equal(res.status, 409, JSON.stringify(res.body))
    assert.match(JSON.stringify(res.body), /majority/)

    // Both voting attendees sign as themselves, each from their own phone.
    for (const [who, client] of [["ana", ana], ["beto", beto]]) {
      const h = await within(client.repo.find(t.url), `${who} to find the acta`, STEP_MS)
      await waitFor(() => plain(h.doc()).status === "signing", `${who} to see the acta open for signing`, STEP_MS)
      change(h, d => {
        d.signatures[who] = { at: now(), device: `android-${who}` }
      })
      await client.acknowledged(h)
      assert.deepEqual(errorsAbout(client, h), [], `${who} signs`)
    }
    await waitFor(
      () => Object.keys(plain(t.doc()).signatures).length === 2,
      "the tecnico to see both signatures",
      STEP_MS
    )
    // A second phone of the tecnico downloads the signed acta, then goes offline.
    const phone = await connect("tec", { ...TEC, name: "tec-phone" })
    const ph = await within(phone.repo.find(t.url), "the tecnico's second phone to find the acta", STEP_MS)
    await waitFor(() => sameHeads(ph.heads(), t.heads()), "the second phone to have the signed acta", STEP_MS)
    const saved = await phone.repo.export(t.documentId)
    await phone.close()

    res = await seal(server.token({ sub: "ana" }))
    assert.equal(res.status, 403, `a leader cannot seal: ${JSON.stringify(res.body)}`)
    // The index (where the server finds the process) is written asynchronously after creation.
    await waitFor(
      async () => {
        res = await seal(tecToken)
        return !(res.status === 409 && /no process document/.test(JSON.stringify(res.body)))
      },
      () => `the process document to be indexed (last seal answer: ${JSON.stringify(res)})`,
      STEP_MS,
      100
    )
    assert.equal(res.status, 200, JSON.stringify(res.body))
    assert.match(JSON.stringify(res.body), /[0-9a-f]{64}/, "the seal record carries the SHA-256")

    // The tecnico's phone had the acta; it gets the seal, then tries to add an agreement.
    await waitFor(() => plain(t.doc()).status === "sealed", "the tecnico's copy to show the seal", STEP_MS)
    const sealedHeads = t.heads()
    const late = change(t, d => {
      d.agreements.push("Acuerdo añadido después del sellado")
    })
    const msg = await rejection(tec, t, late)
    assert.match(msg, /sealed/, msg)
    assertEntry(await quarantined(server, late), { handle: t, hash: late, user: "tec", reason: /sealed/ })

    // The second phone comes back with an agreement it wrote offline (before it knew of the
    // seal): its saved copy is loaded and edited before anything arrives from the server.
    const back = await connect("tec", { ...TEC, name: "tec-phone-back" })
    const bh = back.repo.import(saved, { docId: t.documentId })
    assert.equal(plain(bh.doc()).status, "signing", "the offline copy predates the seal")
    const offline = change(bh, d => {
      d.agreements.push("Acuerdo escrito sin conexión")
    })
    const offlineMsg = await rejection(back, bh, offline)
    assert.match(offlineMsg, /sealed/, offlineMsg)
    assertEntry(await quarantined(server, offline), { handle: t, hash: offline, user: "tec", reason: /sealed/ })
    // It still receives the seal and keeps its own (rejected) agreement locally.
    await waitFor(() => plain(bh.doc()).status === "sealed", "the returning phone to get the seal", STEP_MS)

    // A new phone downloads exactly the sealed acta.
    const fresh = await freshCopy(connect, t)
    const d = plain(fresh.doc())
    assert.equal(d.status, "sealed")
    assert.deepEqual(d.agreements, ["Priorizar veredas en Collique"])
    assert.deepEqual(Object.keys(d.signatures).sort(), ["ana", "beto"])
    assert.ok(sameHeads(fresh.heads(), sealedHeads), "the stored acta is the sealed state")
    assert.ok(!hasChange(fresh, late) && !hasChange(fresh, offline))

    res = await seal(tecToken)
    assert.equal(res.status, 409, `sealed twice: ${JSON.stringify(res.body)}`)
  })
)

// A rejected *creation* has no stored document: the server files it under the district the
// changes claim, so the district's vigilancia and the writer herself see it.
test(
  "a district's vigilancia sees a rejected creation in the quarantine",
  { timeout: TEST_MS },
  () =>
    withServer(async ({ server, connect }) => {
      const ana = await connect("ana")
      const forged = ana.repo.create(acta("ana", { title: "Acta paralela" }))
      const [hash] = decodeHeads(forged.heads())
      await rejection(ana, forged, hash)
      // It is in the quarantine (a province-wide reviewer sees it)…
      const all = await quarantined(server, hash, { sub: "rev", ...VIG, district: "*" })
      assertEntry(all, { handle: forged, hash, user: "ana", reason: /tecnico/ })
      assert.equal(all.district, "150110", `the entry's district: ${JSON.stringify(all)}`)
      // …and the district's vigilancia, and the writer herself, see it too.
      await quarantined(server, hash, { sub: "vig", ...VIG }, 2_000)
      await quarantined(server, hash, { sub: "ana" }, 2_000)
    })
)
