// A community leader's phone, in five minutes of reading: the Minka SDK from Kotlin.
//
// On Android, `dir` is `context.filesDir.resolve("minka").path`, the token comes from the app's
// login, and `networkChanged()` is called from a ConnectivityManager.NetworkCallback.
package pe.minka.samples

import kotlinx.coroutines.runBlocking
import pe.minka.sdk.Event
import pe.minka.sdk.EventListener
import pe.minka.sdk.MinkaClient
import pe.minka.sdk.MinkaException
import pe.minka.sdk.ProposalDraft
import pe.minka.sdk.ProposalStatus
import pe.minka.sdk.SyncStatus

/** Shows what happens; an app would refresh its screens here. */
class PrintingListener : EventListener {
    override fun onEvent(event: Event) {
        when (event) {
            is Event.Rejected -> println("rechazado ${event.doc}: ${event.reason}")
            is Event.Synced -> println("sincronizado ${event.doc}")
            is Event.Connection -> println("conexión: ${event.state}")
            else -> {}
        }
    }
}

/** Creates a proposal offline, submits it, syncs, and prints every document's status. */
fun leaderPhone(dir: String, serverUrl: String, token: String): String = runBlocking {
    val phone = MinkaClient.open(dir, 2027u)
    phone.use {
        phone.setToken(token) // the login; kept on the phone for offline use
        phone.addListener(PrintingListener())

        // Offline: saved (fsynced) on the phone when these calls return.
        val id = phone.createProposal(
            ProposalDraft(
                title = "Veredas para el jirón Los Olivos",
                description = "Construir 300 m de veredas con rampas.",
                zone = "zona-1",
                category = "vías y veredas",
                beneficiaries = 1200,
                estimatedCost = 45_000_000, // céntimos: S/ 450,000.00
                cofinancing = 0,
            ),
        )
        phone.setProposalStatus(id, ProposalStatus.SUBMITTED)
        try {
            phone.setProposalStatus(id, ProposalStatus.ELIGIBLE) // only the técnico may
        } catch (e: MinkaException.NotPermitted) {
            println("no permitido: ${e.message}") // grey the button out instead
        }

        // Online: syncs in the background, reconnects by itself.
        phone.connect(serverUrl, token)
        phone.awaitSynced(id, 30_000u)
        for (doc in phone.list()) {
            val status = when (val s = doc.sync) {
                is SyncStatus.LocalOnly -> "solo en el teléfono"
                is SyncStatus.Pending -> "pendiente"
                is SyncStatus.Synced -> "sincronizado"
                is SyncStatus.Rejected -> "rechazado: ${s.reason}"
            }
            println("${doc.id}  ${doc.title}  $status")
        }
        phone.shutdown()
        id
    }
}

fun main(args: Array<String>) {
    if (args.size != 3) {
        System.err.println("usage: LeaderPhone <dir> <ws://host:port/sync> <token>")
        return
    }
    leaderPhone(args[0], args[1], args[2])
}
