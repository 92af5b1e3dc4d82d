// Prints, as JSON on stdout, a document as the stock automerge-repo client receives it from Minka:
//   node stock-doc.mjs <ws-url-with-?token=> <document id>
// A fresh client (no storage) asks for the document, waits until it is ready, prints it, exits.
// Used by the Rust SDK tests to check that what an SDK phone wrote is what a stock client sees.

import { Repo, decodeHeads } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [url, id] = process.argv.slice(2)
if (!url || !id) {
  console.error("usage: node stock-doc.mjs <ws-url> <document id>")
  process.exit(2)
}
const adapter = new WebSocketClientAdapter(url, 1_000)
const repo = new Repo({ network: [adapter] })
const timer = setTimeout(() => {
  console.error(`document ${id} not ready within 30 s`)
  process.exit(1)
}, 30_000)
try {
  const handle = await repo.find(`automerge:${id}`)
  await handle.whenReady()
  process.stdout.write(JSON.stringify({ heads: decodeHeads(handle.heads()), doc: handle.doc() }))
  clearTimeout(timer)
  await repo.shutdown()
  process.exit(0)
} catch (e) {
  console.error(`stock client: ${e}`)
  process.exit(1)
}
