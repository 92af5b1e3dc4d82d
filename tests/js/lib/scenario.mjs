// Runs one test body against a fresh `minka` server; closes every client and stops the server at
// the end, and on failure adds the server's log and every client's frames to the error.

import { Client } from "./clients.mjs"
import { MinkaServer } from "./server.mjs"

const TAIL_LINES = 80

/**
 * `connect(sub, { roles, district, name, token, peerId, reconnect })` opens a stock client with a
 * token for `sub` (a leader of Comas 150110 unless told otherwise) and waits for the server's
 * `peer` answer; with `offline: true` it returns a client with no network yet (`goOnline()`).
 * `demo: true` seeds the store with `minka demo` before the server starts.
 *
 * @param {(ctx: { server: MinkaServer, connect: (sub: string, opts?: object) => Promise<Client>,
 *   clients: Client[] }) => Promise<void>} body
 */
export async function withServer(body, { demo = false } = {}) {
  const server = await MinkaServer.start({ demo })
  const clients = []
  const open = async (
    sub,
    { roles = ["leader"], district = "150110", name = sub, token, peerId, offline = false, reconnect = true } = {}
  ) => {
    const c = new Client(server, token ?? server.token({ sub, roles, district }), name, { peerId, offline, reconnect })
    clients.push(c)
    if (!offline) await c.connected()
    return c
  }
  let failure
  try {
    await body({ server, connect: open, clients })
  } catch (e) {
    failure = e
  }
  await Promise.allSettled(clients.map(c => c.close()))
  let stopped
  try {
    stopped = await server.stop()
  } catch (e) {
    failure ??= e
  }
  if (!failure && stopped && (stopped.code !== 0 || stopped.signal)) {
    failure = new Error(`minka did not exit cleanly on SIGTERM: ${JSON.stringify(stopped)}`)
  }
  if (failure) {
    const log = server.log().split("\n").slice(-TAIL_LINES).join("\n")
    const frames = clients.map(c => c.frames()).join("\n")
    failure.message += `\n--- minka log (last ${TAIL_LINES} lines) ---\n${log}\n--- client frames ---\n${frames}`
    throw failure
  }
}
