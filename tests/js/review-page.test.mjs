// The review page of the Comité de Vigilancia (server/ui, served at `/`) driven in headless
// Chromium (Debian's `chromium`, through playwright-core) against the real `minka` seeded with
// `minka demo`: sign in by pasting a vigilancia token; the district's proposals, zone bars and
// the CSV and Pabulib downloads; a proposal's timeline and the difference between two versions;
// a live update (a new comment); a conflict between two authors; the quarantine with a leader's
// rejected edit; the sealed acta with its SHA-256; sign-out. A full-page screenshot of every step
// goes to tests/js/output/review-page/ (git-ignored).
//
// Run: cargo build -p minka-server --bin minka && cd tests/js && node --test review-page.test.mjs
// (CHROMIUM_BIN overrides /usr/bin/chromium; MINKA_BIN the server binary.)

import assert from "node:assert/strict"
import { access, mkdir, readFile } from "node:fs/promises"
import path from "node:path"
import { test } from "node:test"
import { fileURLToPath } from "node:url"

import { chromium } from "playwright-core"

import { decodeHeads, splice } from "./lib/clients.mjs"
import { withServer } from "./lib/scenario.mjs"
import { api, waitFor, within } from "./lib/server.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
const OUT = path.join(here, "output", "review-page")
const STEP_MS = 10_000
const TEST_MS = 90_000
const MAX_PAGE_BYTES = 150 * 1024

// Demo data of Comas (crdt-core/src/demo.rs).
const COMAS = "150110"
const VIG = { sub: "comas-vig-elena-torres", name: "Elena Torres Cárdenas", roles: ["vigilancia"], district: COMAS }
const TEC = { sub: "comas-tec-lucia-vargas", name: "Lucía Vargas Salazar", roles: ["tecnico"], district: COMAS }
const ROSA = { sub: "comas-rosa-quispe", name: "Rosa Quispe Huamán", roles: ["leader"], district: COMAS }
const JULIO = { sub: "comas-julio-mamani", name: "Julio Mamani Condori", roles: ["leader"], district: COMAS }
const PEDRO = { sub: "comas-pedro-huaman", name: "Pedro Huamán Rojas", roles: ["leader"], district: COMAS }
const ESCALERAS = "Construcción de escaleras y muros de contención en Collique Quinta Zona"
const COMAS_ZONES = ["Collique", "Santa Luzmila", "La Pascana", "Año Nuevo"]
// Observed, by Pedro Huamán with Julio Mamani as coauthor: both may still edit it.
const CAMARAS = "Cámaras de videovigilancia y alarmas vecinales en La Pascana"

/** `{items}` of a paginated answer (or the answer itself when it is a bare array). */
const itemsOf = body => (Array.isArray(body) ? body : body?.items)

/** GET as `token`, asserting 200; returns the body. */
async function get(server, pathAndQuery, token) {
  const res = await api(server, "GET", pathAndQuery, token)
  assert.equal(res.status, 200, `GET ${pathAndQuery}: ${res.status} ${JSON.stringify(res.body).slice(0, 500)}`)
  return res.body
}

test("the review page: sign in, district, history and diff, live update, conflict, quarantine, sealed acta", { timeout: TEST_MS }, () =>
  withServer(
    async ({ server, connect }) => {
      const base = `http://${server.addr}`
      const vigToken = server.token(VIG)
      const tecToken = server.token(TEC)

      // ---- The page's three files: no token needed, strict CSP, small. ----
      let bytes = 0
      for (const file of ["/", "/app.js", "/app.css"]) {
        const res = await fetch(base + file)
        const body = await res.arrayBuffer()
        assert.equal(res.status, 200, `GET ${file}`)
        assert.match(res.headers.get("content-security-policy") ?? "", /default-src 'self'.*script-src 'self'/, `CSP of ${file}`)
        bytes += body.byteLength
      }
      assert.ok(bytes < MAX_PAGE_BYTES, `the first load is ${bytes} bytes (limit ${MAX_PAGE_BYTES})`)
      console.log(`review page: first load ${bytes} bytes (/, /app.js, /app.css)`)

      // ---- Data the page will show, read through the API. ----
      const proposals = itemsOf(await get(server, "/api/v1/docs?type=proposal", vigToken))
      const escaleras = proposals.find(p => p.title === ESCALERAS)
      assert.ok(escaleras, `the demo proposal ${ESCALERAS} is listed: ${JSON.stringify(proposals.map(p => p.title))}`)
      const actas = itemsOf(await get(server, "/api/v1/docs?type=acta", tecToken))
      const acta = actas.find(a => a.district === COMAS)
      assert.ok(acta, `the Comas acta is listed: ${JSON.stringify(actas)}`)
      assert.equal(acta.status, "signing", "the demo acta waits for its seal")

      // The tecnico seals the acta (a majority of its voting attendees signed in the demo).
      const sealRes = await api(server, "POST", `/api/v1/docs/${acta.id}/seal`, tecToken)
      assert.equal(sealRes.status, 200, `seal: ${JSON.stringify(sealRes.body)}`)
      const sha256 = sealRes.body.sha256
      assert.match(sha256, /^[0-9a-f]{64}$/, "the seal's SHA-256")

      // A leader who is not an author edits the proposal's title: rejected into the quarantine.
      const julio = await connect(JULIO.sub, { token: server.token(JULIO), name: "julio" })
      const handle = await within(julio.repo.find(`automerge:${escaleras.id}`), "the leader to find the proposal", STEP_MS)
      handle.change(d => splice(d, ["title"], 0, 0, "Julio dice: "))
      const [badHash] = decodeHeads(handle.heads())
      let lastQuarantine
      const entry = await waitFor(
        async () => {
          lastQuarantine = await get(server, "/api/v1/quarantine", vigToken)
          return itemsOf(lastQuarantine).find(e => e.hash === badHash)
        },
        () => `the quarantine to list change ${badHash} (last answer: ${JSON.stringify(lastQuarantine)})`,
        STEP_MS,
        100
      )
      assert.equal(entry.documentId, escaleras.id)
      assert.equal(entry.user, JULIO.sub)

      // Both authors of another proposal change its estimated cost at the same time: a conflict.
      const camaras = proposals.find(p => p.title === CAMARAS)
      assert.ok(camaras, `the demo proposal ${CAMARAS} is listed`)
      const pedro = await connect(PEDRO.sub, { token: server.token(PEDRO), name: "pedro" })
      const [hp, hj] = await Promise.all(
        [pedro, julio].map(c => within(c.repo.find(`automerge:${camaras.id}`), `${c.name} to find ${CAMARAS}`, STEP_MS))
      )
      hp.change(d => {
        d.estimatedCost = 65_000_000
      })
      hj.change(d => {
        d.estimatedCost = 70_000_000
      })
      await Promise.all([pedro.acknowledged(hp), julio.acknowledged(hj)])
      let lastConflicts
      await waitFor(
        async () => {
          lastConflicts = await get(server, `/api/v1/docs/${camaras.id}/conflicts`, vigToken)
          return lastConflicts.conflicts?.some(c => c.path === "estimatedCost" || /estimatedCost/.test(JSON.stringify(c.path)))
        },
        () => `the conflicts of ${camaras.id} to list estimatedCost (last answer: ${JSON.stringify(lastConflicts)})`,
        STEP_MS,
        100
      )

      const history = (await get(server, `/api/v1/docs/${escaleras.id}/history`, vigToken)).changes
      assert.ok(history.length >= 2, `the proposal has a history: ${history.length} changes`)
      const sentence = history.flatMap(c => c.descriptions ?? []).find(s => s.trim())
      assert.ok(sentence, `the history describes its changes: ${JSON.stringify(history[0])}`)

      // ---- The browser. ----
      await mkdir(OUT, { recursive: true })
      const executablePath = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium"
      await access(executablePath).catch(() =>
        assert.fail(`no Chromium at ${executablePath}: apt-get install -y chromium (or set CHROMIUM_BIN)`)
      )
      const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] })
      const shots = []
      const problems = []
      try {
        const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "es-PE", timezoneId: "America/Lima" })
        const page = await context.newPage()
        page.setDefaultTimeout(STEP_MS)
        page.on("pageerror", e => problems.push(`page error: ${e.message}`))
        page.on("console", m => {
          if (m.type() === "error" && !/favicon/.test(m.text())) problems.push(`console: ${m.text()}`)
        })
        const shot = async name => {
          const file = path.join(OUT, `${name}.png`)
          await page.screenshot({ path: file, fullPage: true })
          shots.push(file)
        }

        // 1. Sign in by pasting the vigilancia token.
        await page.goto(`${base}/`)
        await page.waitForSelector("#token")
        assert.match(await page.locator("h1").innerText(), /Ingresar/)
        await page.fill("#token", vigToken)
        await shot("01-ingresar")
        await page.click("form.signin button[type=submit]")

        // 2. The district: the demo proposals, the zone bars, who is signed in.
        await page.waitForSelector(`table.docs a:text-is("${ESCALERAS}")`)
        await page.waitForSelector("#zone-bars .zone")
        assert.match(await page.locator("#who-text").innerText(), /Elena Torres Cárdenas · Comité de Vigilancia · Comas/)
        const zones = await page.locator("#zone-bars .zone").evaluateAll(els => els.map(e => e.dataset.zone))
        assert.deepEqual([...zones].sort(), [...COMAS_ZONES].sort(), "one bar per zone of the process")
        const collique = page.locator('#zone-bars .zone[data-zone="Collique"]')
        const track = await collique.locator(".track").boundingBox()
        const requested = await collique.locator(".fill.req").boundingBox()
        assert.ok(track.width > 100 && requested.width > 0, `Collique's bar is drawn (${JSON.stringify({ track, requested })})`)
        assert.match(await page.locator("table.docs").innerText(), /S\/ 1,450,000\.00/, "amounts in soles")
        // The exports download with the token in the header (fetch + Blob link).
        for (const [button, pattern] of [["#export-csv", /Construcción de escaleras/], ["#export-pb", /PROJECTS/]]) {
          const [download] = await Promise.all([page.waitForEvent("download"), page.click(button)])
          const text = await readFile(await download.path(), "utf8")
          assert.match(text, pattern, `${button} downloads ${download.suggestedFilename()}`)
          console.log(`download ${button}: ${download.suggestedFilename()} (${Buffer.byteLength(text)} bytes)`)
        }
        await shot("02-distrito")
        await page.setViewportSize({ width: 360, height: 740 })
        await shot("02b-distrito-360px")
        await page.setViewportSize({ width: 1280, height: 900 })

        // 3. The proposal: its state, its timeline in Spanish with authors, a difference.
        await page.click(`table.docs a:text-is("${ESCALERAS}")`)
        await page.waitForSelector("#timeline li.change")
        assert.equal(await page.locator("h1").innerText(), ESCALERAS)
        assert.equal(await page.locator("#timeline li.change").count(), history.length, "one timeline entry per change")
        const timeline = await page.locator("#timeline").innerText()
        assert.ok(timeline.includes(sentence), `the timeline shows the description ${JSON.stringify(sentence)}`)
        assert.match(timeline, /Rosa Quispe Huamán/, "the author's name in the timeline")
        assert.match(timeline, /\b(el|la|de|los|las)\b|[áéíóúñ]/i, "the descriptions are Spanish")
        await page.locator("#timeline li.change").first().locator('input[name="pick-from"]').check()
        await page.locator("#timeline li.change").last().locator('input[name="pick-to"]').check()
        await page.click("#compare")
        await page.waitForSelector("#diff table.diff tbody tr")
        const diffRows = await page.locator("#diff table.diff tbody tr").count()
        assert.ok(diffRows >= 1, "the difference between the first and the last version has rows")
        await shot("03-propuesta-historia-diferencia")

        // 4. Live: the author comments from her phone; the open page shows it without a reload.
        const comment = "Gracias al Comité de Vigilancia por revisar el expediente del pasaje 17."
        const commentsBefore = await page.locator("ul.comments > li").count()
        const rosa = await connect(ROSA.sub, { token: server.token(ROSA), name: "rosa" })
        const rh = await within(rosa.repo.find(`automerge:${escaleras.id}`), "the author to find her proposal", STEP_MS)
        rh.change(d => {
          d.comments.push({ author: ROSA.sub, text: comment, at: Math.floor(Date.now() / 1000) })
        })
        await rosa.acknowledged(rh)
        const liveStart = Date.now()
        await page.locator("ul.comments > li", { hasText: comment }).waitFor({ timeout: 15_000 })
        assert.equal(await page.locator("ul.comments > li").count(), commentsBefore + 1)
        console.log(`live update: the new comment appeared ${Date.now() - liveStart} ms after the server acknowledged it`)

        // 5. The conflict: "dos personas cambiaron este campo", each value and who wrote it.
        await page.click('nav a[data-nav="home"]')
        await page.click(`table.docs a:text-is("${CAMARAS}")`)
        const conflicts = page.locator("#conflicts")
        await conflicts.waitFor()
        const conflictText = await conflicts.innerText()
        assert.match(conflictText, /Dos personas cambiaron este campo: Costo estimado/)
        for (const want of ["S/ 650,000.00", "S/ 700,000.00", PEDRO.name, JULIO.name])
          assert.ok(conflictText.includes(want), `the conflict shows ${want}: ${conflictText}`)
        await shot("04-propuesta-conflicto")

        // 6. The quarantine: the rejected edit, who sent it and why.
        await page.click('nav a[data-nav="quarantine"]')
        const row = page.locator(`#quarantine tr[data-hash="${badHash}"]`)
        await row.waitFor()
        const rowText = await row.innerText()
        assert.ok(rowText.includes(entry.reason), `the row shows the reason ${JSON.stringify(entry.reason)}: ${rowText}`)
        assert.ok(rowText.includes(entry.userName || JULIO.name), `the row shows who sent it: ${rowText}`)
        assert.match(rowText, /Título/, "the field, in Spanish")
        assert.equal(await row.locator(`a[href="#/docs/${escaleras.id}"]`).count(), 1, "the row links the document")
        await shot("05-cuarentena")

        // 7. The sealed acta, reached from the district page.
        await page.click('nav a[data-nav="home"]')
        await page.click(`a[href="#/docs/${acta.id}"]`)
        await page.waitForSelector("#seal.sealed")
        assert.equal(await page.locator("#seal .big").innerText(), "Acta sellada — no admite cambios")
        assert.equal(await page.locator("#seal-hash").innerText(), sha256, "the page shows the seal's SHA-256")
        const actaText = await page.locator("main").innerText()
        assert.match(actaText, /Rosa Quispe Huamán/, "attendees by name")
        assert.match(actaText, /Priorizar los proyectos de la lista adjunta/, "the agreements")
        await shot("06-acta-sellada")

        // 8. Signing out forgets the token.
        await page.click("#signout")
        await page.waitForSelector("#token")
        assert.equal(await page.evaluate(() => sessionStorage.length), 0, "no token left in sessionStorage")

        assert.deepEqual(problems, [], "no script error and no Content-Security-Policy violation")
      } finally {
        await browser.close()
        if (shots.length) console.log(`screenshots:\n${shots.map(s => `  ${path.relative(process.cwd(), s)}`).join("\n")}`)
      }
    },
    { demo: true }
  )
)
