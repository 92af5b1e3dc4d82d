package pe.minka.sdk

import java.io.File
import java.nio.file.Files
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlin.test.AfterTest
import kotlin.test.BeforeTest
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking

/** The real `minka` binary on an ephemeral port with a temporary sled store. */
class Server : AutoCloseable {
    private val secret = "kotlin-test-secret-0123456789abcdef"
    private val bin = System.getProperty("minka.bin") ?: error("set -Dminka.bin")
    private val dataDir: File = Files.createTempDirectory("minka-kt").toFile()
    private val process: Process
    private val log = StringBuffer()
    val url: String

    init {
        val pb = ProcessBuilder(bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir.path)
        pb.environment()["MINKA_JWT_SECRET"] = secret
        pb.redirectOutput(ProcessBuilder.Redirect.DISCARD)
        process = pb.start()
        val listening = java.util.concurrent.CompletableFuture<String>()
        Thread {
            process.errorStream.bufferedReader().forEachLine { line ->
                log.append(line).append('\n')
                val i = line.indexOf("listen=")
                if (i >= 0 && !listening.isDone) {
                    listening.complete(line.substring(i + 7).takeWhile { !it.isWhitespace() })
                }
            }
        }.apply { isDaemon = true }.start()
        val addr = listening.get(60, TimeUnit.SECONDS)
        url = "ws://$addr/sync"
    }

    /** A token signed with this server's secret (`minka token`). */
    fun token(sub: String, roles: String, district: String = "150110"): String {
        val pb = ProcessBuilder(bin, "token", "--sub", sub, "--name", "Usuario $sub", "--roles", roles, "--district", district)
        pb.environment()["MINKA_JWT_SECRET"] = secret
        val p = pb.start()
        val out = p.inputStream.bufferedReader().readText().trim()
        check(p.waitFor() == 0) { "minka token failed: ${p.errorStream.bufferedReader().readText()}" }
        return out
    }

    override fun close() {
        process.destroyForcibly().waitFor()
        dataDir.deleteRecursively()
    }
}

/** Collects events for assertions. */
class Recorder : EventListener {
    val events = CopyOnWriteArrayList<Event>()
    override fun onEvent(event: Event) {
        events.add(event)
    }
}

fun draft(title: String, cost: Long = 30_000_000) = ProposalDraft(
    title = title,
    description = "Propuesta escrita desde Kotlin.",
    zone = "zona-1",
    category = "vías y veredas",
    beneficiaries = 500,
    estimatedCost = cost,
    cofinancing = 0,
)

/** Polls `what` every 50 ms for up to `seconds`. */
fun eventually(seconds: Long = 20, what: () -> Boolean) {
    val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
    while (System.nanoTime() < deadline) {
        if (what()) return
        Thread.sleep(50)
    }
    throw AssertionError("condition not met within $seconds s")
}

class PhoneTest {
    private lateinit var server: Server
    private val dirs = mutableListOf<File>()

    private fun dir(): String = Files.createTempDirectory("minka-phone").toFile().also { dirs.add(it) }.path

    @BeforeTest
    fun start() {
        server = Server()
    }

    @AfterTest
    fun stop() {
        server.close()
        dirs.forEach { it.deleteRecursively() }
    }

    @Test
    fun `a proposal written offline reaches a second phone`() = runBlocking {
        val rosa = server.token("u-rosa", "leader")
        MinkaClient.open(dir(), 2027u).use { a ->
            a.setToken(rosa)
            val id = a.createProposal(draft("Veredas Los Olivos"))
            assertEquals(SyncStatus.LocalOnly, a.status(id).status)
            a.connect(server.url, rosa)
            assertTrue(a.awaitSynced(id, 20_000u), "not acknowledged")
            assertEquals(0uL, a.status(id).unacknowledged)

            val carla = server.token("u-carla", "leader")
            MinkaClient.open(dir(), 2027u).use { b ->
                val seen = Recorder()
                b.addListener(seen)
                b.connect(server.url, carla)
                eventually { b.list().any { it.id == id } }
                val p = b.proposal(id)
                assertEquals("Veredas Los Olivos", p.title)
                assertEquals("u-rosa", p.createdBy)
                assertEquals(ProposalStatus.DRAFT, p.status)
                assertTrue(seen.events.any { it is Event.Discovered && it.doc == id })
                b.shutdown()
            }
            a.shutdown()
        }
    }

    @Test
    fun `what the user may not do fails locally with a typed exception`() {
        MinkaClient.open(dir(), 2027u).use { a ->
            assertFailsWith<MinkaException.Auth> { a.createProposal(draft("Sin sesión")) }
            a.setToken(server.token("u-rosa", "leader"))
            val id = a.createProposal(draft("Parque"))
            assertFailsWith<MinkaException.NotPermitted> {
                a.setProposalStatus(id, ProposalStatus.ELIGIBLE)
            }
            assertFailsWith<MinkaException.InvalidInput> { a.setEstimatedCost(id, -1) }
            assertFailsWith<MinkaException.InvalidInput> { a.proposal("no-es-un-id") }
            assertEquals(1, a.status(id).unacknowledged.toInt(), "a refused edit was written")
        }
    }

    @Test
    fun `a server rejection arrives as an event with its reason`() = runBlocking {
        val rosa = server.token("u-rosa", "leader")
        val tec = server.token("u-tec", "tecnico")
        MinkaClient.open(dir(), 2027u).use { leader ->
            MinkaClient.open(dir(), 2027u).use { tecnico ->
                leader.setToken(rosa)
                val id = leader.createProposal(draft("Losa deportiva"))
                leader.setProposalStatus(id, ProposalStatus.SUBMITTED)
                leader.connect(server.url, rosa)
                assertTrue(leader.awaitSynced(id, 20_000u))
                tecnico.connect(server.url, tec)
                eventually { runCatching { tecnico.proposal(id).status }.getOrNull() == ProposalStatus.SUBMITTED }

                // Offline, the leader edits; meanwhile the técnico starts the evaluation.
                leader.disconnect()
                leader.setTitle(id, "Losa deportiva techada")
                tecnico.setProposalStatus(id, ProposalStatus.IN_EVALUATION)
                assertTrue(tecnico.awaitSynced(id, 20_000u))

                val seen = Recorder()
                leader.addListener(seen)
                leader.connect(server.url, rosa)
                // Waiting for it to sync ends in the typed exception, with the server's reason.
                val refused = assertFailsWith<MinkaException.RejectedByServer> {
                    leader.awaitSynced(id, 20_000u)
                }
                assertTrue(refused.message!!.contains("title"), refused.message)
                eventually { seen.events.any { it is Event.Rejected && it.doc == id } }
                val rejected = seen.events.filterIsInstance<Event.Rejected>().first()
                assertTrue(rejected.reason.contains("title"), rejected.reason)
                val status = leader.status(id).status
                assertTrue(status is SyncStatus.Rejected && status.reason == rejected.reason, "$status")
                assertEquals(1, leader.rejections(id).size)

                // Discarded, the phone is back in step with the server.
                assertEquals(1uL, leader.discardRejected(id))
                assertTrue(leader.awaitSynced(id, 20_000u))
                assertEquals("Losa deportiva", leader.proposal(id).title)
                tecnico.shutdown()
                leader.shutdown()
            }
        }
    }

    @Test
    fun `the store survives closing and reopening`() {
        val dir = dir()
        val id = MinkaClient.open(dir, 2027u).use { a ->
            a.setToken(server.token("u-rosa", "leader"))
            val id = a.createProposal(draft("Alumbrado público"))
            a.comment(id, "Lo vimos en la asamblea.")
            id
        }
        MinkaClient.open(dir, 2027u).use { a ->
            assertEquals("u-rosa", a.user())
            val p = a.proposal(id)
            assertEquals("Alumbrado público", p.title)
            assertEquals(1, p.comments.size)
            assertEquals(listOf(id), a.list().map { it.id })
        }
    }

    @Test
    fun `the sample runs end to end`() {
        val id = pe.minka.samples.leaderPhone(dir(), server.url, server.token("u-ana", "leader"))
        MinkaClient.open(dir(), 2027u).use { b ->
            val t = server.token("u-beto", "leader")
            b.connect(server.url, t)
            eventually { b.list().any { it.id == id } }
            assertEquals(ProposalStatus.SUBMITTED, b.proposal(id).status)
        }
    }
}
