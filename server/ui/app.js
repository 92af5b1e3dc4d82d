// Minka review page: the Comité de Vigilancia's view of a district's participatory budget.
// Plain JS, no framework, no build step, nothing loaded from elsewhere (it must work offline).
// Every piece of data from the API is put on the page with textContent / text nodes, never as
// HTML. The token lives in sessionStorage only and goes in the Authorization header of every
// API call (and in the query of the EventSource, which cannot set headers).
"use strict";

(() => {
  const TOKEN_KEY = "minka.token";
  const API = "/api/v1";
  const POLL_MS = 10_000;
  const PER_PAGE = 50;

  // ---- Spanish labels -------------------------------------------------------------------------

  const STATUS = {
    proposal: {
      draft: "Borrador",
      submitted: "Presentada",
      in_evaluation: "En evaluación",
      observed: "Observada",
      eligible: "Viable/Elegible",
      ineligible: "No viable",
      prioritized: "Priorizada",
      not_prioritized: "No priorizada",
      withdrawn: "Retirada",
    },
    acta: { draft: "Borrador", signing: "En firma", sealed: "Sellada" },
    observation: {
      open: "Abierta",
      sent: "Enviada",
      answered: "Respondida",
      closed: "Cerrada",
      escalated: "Escalada",
    },
    process: {
      preparation: "Preparación",
      concertation: "Concertación",
      coordination: "Coordinación",
      formalization: "Formalización",
      accountability: "Rendición de cuentas",
    },
  };
  const TYPES = {
    proposal: "Propuesta",
    acta: "Acta",
    observation: "Observación",
    process: "Proceso",
    index: "Índice",
  };
  const ACTA_KIND = {
    workshop: "Taller",
    formalization: "Formalización de acuerdos",
    committee_session: "Sesión del comité",
  };
  const ROLES = {
    leader: "Agente participante",
    tecnico: "Equipo técnico",
    vigilancia: "Comité de Vigilancia",
    admin: "Administración municipal",
  };
  // Field names of schema v1, for paths in diffs, conflicts and the quarantine.
  const FIELDS = {
    type: "Tipo",
    schemaVersion: "Versión del esquema",
    district: "Distrito",
    processYear: "Año fiscal",
    title: "Título",
    description: "Descripción",
    zone: "Zona",
    category: "Categoría",
    beneficiaries: "Beneficiarios",
    estimatedCost: "Costo estimado",
    cofinancing: "Cofinanciamiento",
    status: "Estado",
    createdBy: "Creado por",
    coauthors: "Coautores",
    supporters: "Apoyos",
    comments: "Comentarios",
    evaluation: "Evaluación",
    viable: "Viable",
    validatedCost: "Costo validado",
    notes: "Notas",
    evaluator: "Evaluador",
    scores: "Puntajes",
    kind: "Clase",
    date: "Fecha",
    place: "Lugar",
    attendees: "Asistentes",
    agreements: "Acuerdos",
    prioritized: "Lista priorizada",
    committeeMembers: "Comité de Vigilancia",
    signatures: "Firmas",
    target: "Documento observado",
    evidence: "Evidencias",
    responses: "Respuestas",
    ceiling: "Tope presupuestal",
    zones: "Topes por zona",
    phase: "Fase",
    criteria: "Criterios",
    docs: "Documentos",
    amount: "Monto",
    rank: "Puesto",
    proposalId: "Propuesta",
    text: "Texto",
    author: "Autor",
    at: "Fecha",
    name: "Nombre",
    organization: "Organización",
    votes: "Vota",
    device: "Dispositivo",
    weight: "Peso",
  };
  const MONEY_FIELDS = new Set(["estimatedCost", "cofinancing", "validatedCost", "amount", "ceiling", "zones"]);
  const WARNINGS = {
    cost_not_positive: "El costo estimado no es positivo",
    cofinancing_negative: "El cofinanciamiento es negativo",
    cofinancing_exceeds_cost: "El cofinanciamiento supera el costo",
    beneficiaries_not_positive: "No indica beneficiarios",
    validated_cost_not_positive: "El costo validado no es positivo",
    unknown_zone: "Zona que no figura en el proceso",
    ceiling_not_positive: "El tope presupuestal no es positivo",
    zone_ceilings_over_ceiling: "Los topes por zona suman más que el tope del distrito",
    zone_ceiling_over_ceiling: "El tope de una zona supera el tope del distrito",
    criteria_weights_not_100: "Los pesos de los criterios no suman 100",
    invalid_proposal_id: "Identificador de propuesta no válido",
    unknown_proposal: "Propuesta desconocida en la lista priorizada",
    duplicate_proposal: "Propuesta repetida en la lista priorizada",
    duplicate_rank: "Puesto repetido en la lista priorizada",
    rank_not_positive: "Puesto no válido en la lista priorizada",
    amount_not_positive: "Monto no positivo",
    zone_over_ceiling: "Se supera el tope presupuestal de la zona",
    total_over_ceiling: "Se supera el tope presupuestal del distrito",
    process_mismatch: "No corresponde al distrito o año del proceso",
    signature_not_voter: "Firma de alguien sin voto en el acta",
    invalid_target: "El documento observado no es válido",
  };
  const ACTIONS = {
    set: "cambió",
    delete: "borró",
    insert: "agregó",
    splice_text: "editó el texto de",
    increment: "incrementó",
    mark: "marcó",
  };

  // ---- State ----------------------------------------------------------------------------------

  const S = {
    token: null,
    claims: null,
    notice: null, // a message for the sign-in page (e.g. after a 401)
    districtNames: {},
    view: null, // { refresh(), relevant(event) } of the current page
    seq: 0, // bumped on every navigation: late answers of an old page are dropped
    es: null,
    esOpened: false,
    poll: null,
    pending: null,
  };

  // ---- Small helpers --------------------------------------------------------------------------

  const $ = sel => document.querySelector(sel);

  /** Builds an element. Children are nodes or strings (always inserted as text). */
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    add(el, kids);
    return el;
  }
  function add(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k == null || k === false) continue;
      el.append(k instanceof Node ? k : String(k));
    }
    return el;
  }
  const link = (href, ...kids) => h("a", { href }, ...kids);
  const docHref = id => `#/docs/${encodeURIComponent(id)}`;
  const section = (title, ...kids) => h("section", { class: "card" }, h("h2", { text: title }), ...kids);
  const muted = text => h("p", { class: "muted", text });

  /** `S/ 450,000.00` from céntimos. */
  function money(cents) {
    if (cents == null || cents === "" || !Number.isFinite(Number(cents))) return "—";
    const n = Math.round(Number(cents));
    const abs = Math.abs(n);
    const soles = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return `${n < 0 ? "-" : ""}S/ ${soles}.${String(abs % 100).padStart(2, "0")}`;
  }
  const num = n => (n == null || !Number.isFinite(Number(n)) ? "—" : Number(n).toLocaleString("es-PE"));

  const DATE_TIME = new Intl.DateTimeFormat("es-PE", {
    dateStyle: "medium",
    timeStyle: "short",
    timeZone: "America/Lima",
  });
  const DATE_ONLY = new Intl.DateTimeFormat("es-PE", { dateStyle: "long", timeZone: "UTC" });

  /** A date and time in Lima's time zone from unix seconds (or milliseconds, or ISO text). */
  function when(t) {
    if (t == null || t === 0 || t === "") return "fecha desconocida";
    let d;
    if (typeof t === "number") d = new Date(t > 1e12 ? t : t * 1000);
    else d = new Date(t);
    return Number.isNaN(d.getTime()) ? String(t) : DATE_TIME.format(d);
  }
  function isoDay(s) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(s || ""));
    return m ? DATE_ONLY.format(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]))) : s || "—";
  }
  const timeEl = t => h("time", { datetime: typeof t === "number" ? new Date(t > 1e12 ? t : t * 1000).toISOString() : null }, when(t));

  const statusLabel = (type, status) => (status == null ? "—" : (STATUS[type] || {})[status] || status);
  const badge = (type, status) => h("span", { class: `badge s-${String(status || "none")}` }, statusLabel(type, status));
  const short = hash => String(hash || "").slice(0, 8);
  const districtLabel = d =>
    d === "*" ? "Todos los distritos" : S.districtNames[d] ? `${S.districtNames[d]} (${d})` : `Distrito ${d}`;
  function learnDistrict(ubigeo, name) {
    if (ubigeo && name && S.districtNames[ubigeo] !== name) {
      S.districtNames[ubigeo] = name;
      renderWho();
    }
  }

  /** A field path (`evaluation/viable`, `zones.Collique`, `prioritized[2].amount`) in Spanish. */
  function pathLabel(path, names) {
    const segs = Array.isArray(path) ? path.map(String) : String(path || "").split(/[/.[\]]+/).filter(Boolean);
    if (!segs.length) return "(documento)";
    return segs
      .map(s => (/^\d+$/.test(s) ? `n.º ${Number(s) + 1}` : FIELDS[s] || (names && names[s]) || s))
      .join(" › ");
  }
  function lastField(path) {
    const segs = Array.isArray(path) ? path.map(String) : String(path || "").split(/[/.[\]]+/).filter(Boolean);
    return segs.find(s => MONEY_FIELDS.has(s)) || segs[segs.length - 1];
  }

  /** Whether a path holds unix seconds (a supporter's key, a comment's or signature's `at`). */
  function isTimeField(path) {
    const segs = Array.isArray(path) ? path.map(String) : String(path || "").split(/[/.[\]]+/).filter(Boolean);
    return (segs[0] === "supporters" && segs.length === 2) || ["at", "sealedAt", "createdAt"].includes(segs[segs.length - 1]);
  }

  /** Any JSON value as readable text (amounts as soles when the path names an amount, a
   * status by its Spanish label when `type` is the document's type). */
  function valueText(v, path, type) {
    if (v === undefined || v === null) return "(vacío)";
    if (typeof v === "string" && type && lastField(path) === "status") return statusLabel(type, v);
    if (typeof v === "string" && lastField(path) === "kind" && ACTA_KIND[v]) return ACTA_KIND[v];
    if (typeof v === "string" && lastField(path) === "phase") return statusLabel("process", v);
    if (typeof v === "boolean") return v ? "Sí" : "No";
    if (typeof v === "number" && MONEY_FIELDS.has(lastField(path))) return money(v);
    if (typeof v === "number" && isTimeField(path)) return when(v);
    if (typeof v === "number") return num(v);
    if (typeof v === "string") return v === "" ? "(texto vacío)" : v;
    return JSON.stringify(v, null, 2);
  }

  // ---- Token and session ----------------------------------------------------------------------

  /** The JWT's payload (not verified here: the server verifies every call). */
  function decodeJwt(token) {
    const parts = token.split(".");
    if (parts.length !== 3) throw new Error("El token debe tener tres partes separadas por puntos.");
    let b = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    b += "=".repeat((4 - (b.length % 4)) % 4);
    const bin = atob(b);
    const bytes = Uint8Array.from(bin, c => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== "object") throw new Error("El token no tiene datos válidos.");
    return claims;
  }
  const expired = claims => typeof claims.exp === "number" && claims.exp * 1000 <= Date.now();

  function loadSession() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return;
    try {
      const claims = decodeJwt(token);
      if (expired(claims)) throw new Error("vencido");
      S.token = token;
      S.claims = claims;
    } catch {
      sessionStorage.removeItem(TOKEN_KEY);
      S.notice = "Tu sesión venció. Vuelve a ingresar con un token vigente.";
    }
  }

  function signIn(token) {
    const claims = decodeJwt(token);
    if (!claims.sub) throw new Error("El token no indica el usuario (sub).");
    if (expired(claims)) throw new Error("El token ya venció. Pide uno nuevo.");
    sessionStorage.setItem(TOKEN_KEY, token);
    S.token = token;
    S.claims = claims;
    S.notice = null;
    renderWho();
    startLive();
  }

  function signOut(notice) {
    sessionStorage.removeItem(TOKEN_KEY);
    S.token = null;
    S.claims = null;
    S.notice = notice || null;
    stopLive();
    renderWho();
    if (location.hash !== "#/ingresar") location.hash = "#/ingresar";
    else route();
  }

  function renderWho() {
    const signedIn = !!S.claims;
    $("#who").hidden = !signedIn;
    $("#nav").hidden = !signedIn;
    if (!signedIn) return;
    const c = S.claims;
    const roles = (Array.isArray(c.roles) ? c.roles : []).map(r => ROLES[r] || r).join(", ") || "sin rol";
    $("#who-text").replaceChildren(
      h("strong", { text: c.name || c.sub }),
      ` · ${roles} · ${districtLabel(String(c.district || "—"))}`
    );
  }

  // ---- API ------------------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, detail) {
      super(detail || `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
    }
  }

  async function apiFetch(path, options = {}) {
    let res;
    try {
      res = await fetch(API + path, {
        ...options,
        cache: "no-store",
        headers: { Authorization: `Bearer ${S.token}`, Accept: "application/json", ...(options.headers || {}) },
      });
    } catch {
      throw new HttpError(0, "");
    }
    if (res.status === 401) {
      signOut("El servidor no aceptó tu token (no es válido o venció). Vuelve a ingresar.");
      throw new HttpError(401, "");
    }
    if (!res.ok) {
      let detail = "";
      try {
        const body = await res.json();
        detail = body && body.error ? String(body.error) : "";
      } catch {
        // not JSON
      }
      throw new HttpError(res.status, detail);
    }
    return res;
  }
  const getJson = async path => (await apiFetch(path)).json();

  /** `{items, page, perPage, total}`, also from an answer that is a bare array. */
  const paged = body =>
    Array.isArray(body) ? { items: body, page: 1, perPage: body.length, total: body.length } : body;

  function errorText(e) {
    const s = e && e.status;
    if (s === 0) return "No se pudo conectar con el servidor. Revisa tu conexión e inténtalo de nuevo.";
    if (s === 401) return "Tu sesión no es válida. Vuelve a ingresar.";
    if (s === 403) return "No tienes permiso para ver esto (por tu rol o tu distrito).";
    if (s === 404) return "No se encontró: no existe o pertenece a otro distrito.";
    if (s === 400) return "La consulta no es válida.";
    if (s === 409) return "La operación no se pudo realizar por un conflicto.";
    if (s === 503) return "El servidor se está reiniciando. Inténtalo en unos segundos.";
    if (s) return `El servidor respondió con un error (${s}).`;
    return "Ocurrió un error inesperado en la página.";
  }
  function errorBox(e) {
    return h(
      "div",
      { class: "error", role: "alert" },
      h("p", { text: errorText(e) }),
      e && e.detail ? h("p", { class: "detail", text: `Detalle del servidor: ${e.detail}` }) : null
    );
  }

  /** Downloads `path` with the token in the header and saves it through a Blob link. */
  async function download(path, filename, button) {
    button.disabled = true;
    try {
      const blob = await (await apiFetch(path)).blob();
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30_000);
      flash(`Descarga lista: ${filename}`);
    } catch (e) {
      if (e.status !== 401) flash(errorText(e), true);
    } finally {
      button.disabled = false;
    }
  }

  let flashTimer;
  function flash(text, isError) {
    const el = $("#flash");
    el.textContent = text;
    el.className = isError ? "flash error" : "flash";
    el.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => (el.hidden = true), 8_000);
  }

  // ---- Live updates ---------------------------------------------------------------------------

  function setLive(mode) {
    const el = $("#live");
    el.className = `live ${mode}`;
    el.textContent = mode === "on" ? "En vivo" : mode === "poll" ? "Actualiza cada 10 s" : "";
  }

  function startLive() {
    stopLive();
    if (!S.token) return;
    if (typeof EventSource !== "function") return startPolling();
    let es;
    try {
      es = new EventSource(`${API}/events?token=${encodeURIComponent(S.token)}`);
    } catch {
      return startPolling();
    }
    S.es = es;
    S.esOpened = false;
    es.addEventListener("changed", ev => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (S.view && S.view.relevant(data || {})) scheduleRefresh();
    });
    // The server dropped events for us (we lagged): refresh once.
    es.addEventListener("resync", () => scheduleRefresh());
    es.onopen = () => {
      stopPolling();
      setLive("on");
      // Changes made while the stream was down were not announced: catch up once.
      if (S.esOpened) scheduleRefresh();
      S.esOpened = true;
    };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED && S.es === es) S.es = null;
      startPolling();
    };
  }
  function stopLive() {
    if (S.es) S.es.close();
    S.es = null;
    stopPolling();
    setLive("off");
  }
  function startPolling() {
    if (S.poll || !S.token) return;
    setLive("poll");
    S.poll = setInterval(() => {
      if (document.visibilityState !== "hidden") scheduleRefresh();
    }, POLL_MS);
  }
  function stopPolling() {
    clearInterval(S.poll);
    S.poll = null;
  }
  function scheduleRefresh() {
    clearTimeout(S.pending);
    S.pending = setTimeout(() => {
      if (S.claims && expired(S.claims)) return signOut("Tu sesión venció. Vuelve a ingresar con un token vigente.");
      if (S.view) S.view.refresh();
    }, 300);
  }

  // ---- Router ---------------------------------------------------------------------------------

  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const q = raw.indexOf("?");
    const path = q < 0 ? raw : raw.slice(0, q);
    return {
      parts: path.split("/").filter(Boolean).map(p => decodeURIComponent(p)),
      query: new URLSearchParams(q < 0 ? "" : raw.slice(q + 1)),
    };
  }
  /** Rewrites the hash's query without a navigation (filters of the current page). */
  function replaceQuery(base, params) {
    const clean = new URLSearchParams();
    for (const [k, v] of params) if (v) clean.set(k, v);
    const qs = clean.toString();
    history.replaceState(null, "", `#${base}${qs ? `?${qs}` : ""}`);
  }

  async function route() {
    const { parts, query } = parseHash();
    S.seq += 1;
    S.view = null;
    $("#flash").hidden = true;
    const main = $("#main");
    main.replaceChildren();
    if (!S.token) {
      if (parts[0] !== "ingresar") {
        location.replace("#/ingresar");
        return;
      }
      document.title = "Ingresar — Minka";
      signInView(main);
      return;
    }
    for (const a of document.querySelectorAll("[data-nav]")) {
      const active = (a.dataset.nav === "quarantine") === (parts[0] === "quarantine");
      a.classList.toggle("active", active);
    }
    window.scrollTo(0, 0);
    document.title = `${{ docs: "Documento", quarantine: "Cuarentena" }[parts[0]] || "Distrito"} — Minka`;
    let view;
    switch (parts[0]) {
      case undefined:
        view = dashboardView(main, query);
        break;
      case "docs":
        view = docView(main, parts[1] || "");
        break;
      case "quarantine":
        view = quarantineView(main, query);
        break;
      case "ingresar":
        location.replace("#/");
        return;
      default:
        main.append(h("h1", { text: "Página no encontrada" }), link("#/", "Volver al inicio"));
        return;
    }
    S.view = view;
    await view.refresh();
  }

  /** A guard for one page: false once the user navigated away. */
  function alive() {
    const seq = S.seq;
    return () => seq === S.seq;
  }

  // ---- Sign in --------------------------------------------------------------------------------

  function signInView(main) {
    const area = h("textarea", {
      id: "token",
      rows: 5,
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "eyJhbGciOiJIUzI1NiIs…",
      required: true,
    });
    const msg = h("div", { role: "alert" });
    if (S.notice) msg.append(h("p", { class: "error", text: S.notice }));
    const form = h(
      "form",
      {
        class: "card signin",
        onsubmit: ev => {
          ev.preventDefault();
          try {
            signIn(area.value.trim().replace(/^Bearer\s+/i, ""));
            location.hash = "#/";
          } catch (e) {
            msg.replaceChildren(
              h("p", { class: "error", text: `No se pudo leer el token. ${e instanceof SyntaxError ? "No tiene el formato de un JWT." : e.message}` })
            );
          }
        },
      },
      h("h1", { text: "Ingresar" }),
      h(
        "p",
        {},
        "Pega el token (JWT) que te entregó la municipalidad o el administrador de Minka. ",
        "Se guarda solo en esta pestaña del navegador y se borra al salir o al cerrarla."
      ),
      msg,
      h("label", { for: "token", text: "Token de acceso" }),
      area,
      h("button", { type: "submit", class: "primary", text: "Ingresar" })
    );
    main.append(form);
    area.focus();
  }

  // ---- District dashboard ---------------------------------------------------------------------

  function dashboardView(main, query) {
    const ok = alive();
    const scope = String(S.claims.district || "");
    const all = scope === "*";
    const district = all ? query.get("district") || "" : scope;
    const filters = {
      type: query.get("type") || "proposal",
      status: query.get("status") || "",
      zone: query.get("zone") || "",
      q: query.get("q") || "",
      page: Math.max(1, Number(query.get("page")) || 1),
    };

    const head = h("div", { class: "page-head" }, h("h1", { text: "Presupuesto participativo" }));
    const updated = h("p", { class: "updated muted" });
    const picker = h("div", { class: "picker" });
    const summaryBox = h("div", { class: "summary" });
    const moreBox = h("div");
    const listBox = h("div");
    main.append(head, picker, updated, summaryBox);

    if (all) {
      const select = h("select", {
        id: "district-pick",
        onchange: () => (location.hash = select.value ? `#/?district=${encodeURIComponent(select.value)}` : "#/"),
      });
      picker.append(h("label", { for: "district-pick", text: "Distrito: " }), select);
      fillDistricts(select, district, ok);
    }
    if (!district) {
      main.append(muted("Elige un distrito para ver sus propuestas, topes y actas."));
      return { refresh: async () => {}, relevant: () => false };
    }

    // Filters: they change the list in place (and the address, for reloads and links).
    const typeSel = h("select", { id: "f-type", name: "type" });
    for (const [v, label] of [["proposal", "Propuestas"], ["acta", "Actas"], ["observation", "Observaciones"], ["process", "Proceso"], ["todos", "Todos los tipos"]])
      typeSel.append(h("option", { value: v, selected: v === filters.type }, label));
    const statusSel = h("select", { id: "f-status", name: "status" });
    const zoneSel = h("select", { id: "f-zone", name: "zone" }, h("option", { value: "" }, "Todas las zonas"));
    if (filters.zone) zoneSel.append(h("option", { value: filters.zone, selected: true }, filters.zone));
    const search = h("input", { id: "f-q", name: "q", type: "search", value: filters.q, placeholder: "Buscar por título" });
    const fillStatuses = () => {
      const types = filters.type === "todos" ? ["proposal", "acta", "observation"] : [filters.type];
      statusSel.replaceChildren(h("option", { value: "" }, "Todos los estados"));
      for (const t of types) {
        if (!STATUS[t] || t === "process") continue;
        const group = h("optgroup", { label: TYPES[t] });
        for (const [v, label] of Object.entries(STATUS[t])) group.append(h("option", { value: v, selected: v === filters.status }, label));
        statusSel.append(group);
      }
    };
    fillStatuses();
    let searchTimer;
    const changed = () => {
      filters.type = typeSel.value;
      filters.status = statusSel.value;
      filters.zone = zoneSel.value;
      filters.q = search.value.trim();
      filters.page = 1;
      syncQuery();
      loadList();
    };
    typeSel.addEventListener("change", () => {
      filters.type = typeSel.value;
      statusSel.value = "";
      fillStatuses();
      changed();
    });
    statusSel.addEventListener("change", changed);
    zoneSel.addEventListener("change", changed);
    search.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(changed, 350);
    });
    const form = h(
      "form",
      { class: "filters", role: "search", onsubmit: ev => (ev.preventDefault(), changed()) },
      field("Tipo", typeSel),
      field("Estado", statusSel),
      field("Zona", zoneSel),
      field("Buscar", search)
    );
    main.append(section("Documentos del distrito", form, listBox), moreBox);

    function syncQuery() {
      replaceQuery("/", [
        ["district", all ? district : ""],
        ["type", filters.type === "proposal" ? "" : filters.type],
        ["status", filters.status],
        ["zone", filters.zone],
        ["q", filters.q],
        ["page", filters.page > 1 ? String(filters.page) : ""],
      ]);
    }

    async function loadList() {
      const p = new URLSearchParams();
      if (filters.type !== "todos") p.set("type", filters.type);
      for (const k of ["status", "zone", "q"]) if (filters[k]) p.set(k, filters[k]);
      if (all) p.set("district", district);
      p.set("page", String(filters.page));
      p.set("perPage", String(PER_PAGE));
      let body;
      try {
        body = paged(await getJson(`/docs?${p}`));
      } catch (e) {
        if (ok()) listBox.replaceChildren(errorBox(e));
        return;
      }
      if (!ok()) return;
      listBox.replaceChildren(docTable(body.items || []), pager(body, page => {
        filters.page = page;
        syncQuery();
        loadList();
      }));
      for (const d of body.items || []) learnDistrict(d.district, d.districtName);
    }

    async function loadSummary() {
      let s;
      try {
        s = await getJson(`/districts/${encodeURIComponent(district)}/summary`);
      } catch (e) {
        if (ok()) summaryBox.replaceChildren(errorBox(e));
        return;
      }
      if (!ok()) return;
      learnDistrict(s.district, s.districtName);
      head.replaceChildren(
        h("h1", {}, `Presupuesto participativo ${s.processYear || ""} — ${s.districtName || districtLabel(district)}`)
      );
      // The zone filter offers the process's zones.
      const chosen = zoneSel.value;
      zoneSel.replaceChildren(h("option", { value: "" }, "Todas las zonas"));
      const zones = (s.zones || []).map(z => z.zone);
      if (chosen && !zones.includes(chosen)) zones.push(chosen);
      for (const z of zones) zoneSel.append(h("option", { value: z, selected: z === chosen }, z));
      const cards = summaryCards(s, district);
      summaryBox.replaceChildren(...cards.slice(0, 3));
      moreBox.replaceChildren(...cards.slice(3));
    }

    return {
      refresh: async () => {
        await Promise.all([loadSummary(), loadList()]);
        if (ok()) updated.textContent = `Datos al ${when(Date.now())}`;
      },
      relevant: ev => !ev.district || ev.district === district,
    };
  }

  async function fillDistricts(select, current, ok) {
    select.append(h("option", { value: "" }, "Elige un distrito…"));
    try {
      const body = paged(await getJson("/docs?type=process&perPage=100"));
      if (!ok()) return;
      const seen = new Map();
      for (const d of body.items || []) {
        learnDistrict(d.district, d.districtName);
        seen.set(d.district, d.districtName || d.district);
      }
      if (current && !seen.has(current)) seen.set(current, districtLabel(current));
      for (const [u, name] of [...seen].sort((a, b) => String(a[1]).localeCompare(String(b[1]), "es")))
        select.append(h("option", { value: u, selected: u === current }, `${name} (${u})`));
    } catch (e) {
      if (ok()) select.after(h("span", { class: "error inline", text: errorText(e) }));
    }
  }

  function field(label, control) {
    const id = control.id;
    return h("div", { class: "field" }, h("label", { for: id, text: label }), control);
  }

  function summaryCards(s, district) {
    const zones = s.zones || [];
    const sum = key => zones.reduce((acc, z) => acc + (Number(z[key]) || 0), 0);
    const csv = h("button", { type: "button", id: "export-csv", text: "Descargar CSV" });
    csv.addEventListener("click", () =>
      download(`/districts/${encodeURIComponent(district)}/export.csv`, `minka-${district}-${s.processYear || ""}.csv`, csv)
    );
    const pb = h("button", { type: "button", id: "export-pb", text: "Descargar Pabulib (.pb)" });
    pb.addEventListener("click", () =>
      download(`/districts/${encodeURIComponent(district)}/export.pb`, `minka-${district}-${s.processYear || ""}.pb`, pb)
    );

    const totals = h(
      "section",
      { class: "card totals" },
      h("h2", { text: "Tope presupuestal" }),
      h(
        "dl",
        { class: "kv" },
        kv("Tope del distrito", s.ceilingText || money(s.ceiling)),
        kv("Solicitado (todas las zonas)", money(sum("requested"))),
        kv("Priorizado", money(sum("prioritized"))),
        kv("Saldo del tope", s.ceiling == null ? "—" : money(Number(s.ceiling) - sum("prioritized")))
      ),
      h("div", { class: "actions" }, csv, pb)
    );

    const bars = h("div", { class: "bars", id: "zone-bars" });
    for (const z of zones) bars.append(zoneBar(z));
    if (!zones.length) bars.append(muted("El proceso no define topes por zona."));
    const zonesCard = section(
      "Totales por zona frente a su tope",
      h(
        "p",
        { class: "legend" },
        h("span", { class: "key req" }), " solicitado ",
        h("span", { class: "key pri" }), " priorizado ",
        h("span", { class: "key kcap" }), " tope"
      ),
      bars
    );

    const warnings = s.warnings || [];
    const warnCard = section(
      `Alertas (${warnings.length})`,
      warnings.length ? warningList(warnings, true) : muted("Sin alertas: los totales están dentro de los topes.")
    );

    const ranking = s.proposals || [];
    const rankTable = h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, ["Puesto", "Propuesta", "Zona", "Estado", "Monto", "Puntaje"].map(t => h("th", { text: t })))),
      h(
        "tbody",
        {},
        ranking.map(p =>
          h(
            "tr",
            {},
            td("Puesto", p.rank ?? "—"),
            td("Propuesta", link(docHref(p.id), p.title || "(sin título)")),
            td("Zona", p.zone || "—"),
            td("Estado", badge("proposal", p.status)),
            td("Monto", p.amountText || money(p.amount), "num"),
            td("Puntaje", p.score == null ? "sin puntaje" : num(p.score), "num")
          )
        )
      )
    );
    const rankCard = section("Orden por puntaje", ranking.length ? rankTable : muted("Aún no hay propuestas."));

    const actas = s.actas || [];
    const actaCard = section(
      "Actas",
      actas.length
        ? h(
            "ul",
            { class: "plain" },
            actas.map(a =>
              h(
                "li",
                {},
                link(docHref(a.id), a.title || "(acta sin título)"),
                " ",
                a.sealed ? h("span", { class: "badge s-sealed", text: "Sellada" }) : badge("acta", a.status),
                h("span", { class: "muted" }, ` · firmas ${num(a.signed)} de ${num(a.voters)} votantes`)
              )
            )
          )
        : muted("Aún no hay actas.")
    );
    return [totals, zonesCard, warnCard, rankCard, actaCard];
  }

  /** One zone: requested and prioritized against its ceiling, drawn with CSS widths. */
  function zoneBar(z) {
    const ceiling = Number(z.ceiling) || 0;
    const requested = Number(z.requested) || 0;
    const prioritized = Number(z.prioritized) || 0;
    const scale = Math.max(ceiling, requested, prioritized, 1);
    const pct = v => `${Math.min(100, (v / scale) * 100).toFixed(2)}%`;
    const req = h("div", { class: "fill req" });
    const pri = h("div", { class: "fill pri" });
    const cap = h("div", { class: "cap" });
    // CSSOM (not a style attribute): allowed by the page's strict style-src.
    req.style.width = pct(requested);
    pri.style.width = pct(prioritized);
    cap.style.left = pct(ceiling);
    const over = !!z.overCeiling;
    const track = h("div", {
      class: "track",
      role: "img",
      "aria-label": `${z.zone}: solicitado ${z.requestedText || money(requested)}, priorizado ${z.prioritizedText || money(prioritized)}, tope ${z.ceilingText || money(ceiling)}`,
    }, req, pri, cap);
    return h(
      "div",
      { class: `zone${over ? " over" : ""}`, "data-zone": z.zone },
      h(
        "div",
        { class: "zone-head" },
        h("strong", { text: z.zone }),
        h("span", { class: "muted" }, ` · ${num(z.proposals)} propuesta${Number(z.proposals) === 1 ? "" : "s"}`),
        over ? h("span", { class: "badge s-over", text: "Supera el tope" }) : null
      ),
      track,
      h(
        "p",
        { class: "zone-nums" },
        `Solicitado ${z.requestedText || money(requested)} · Priorizado ${z.prioritizedText || money(prioritized)} · `,
        `Tope ${z.ceilingText || money(ceiling)} · Saldo ${z.remainingText || money(z.remaining)}`
      )
    );
  }

  function warningList(warnings, withDocs) {
    return h(
      "ul",
      { class: "warnings" },
      warnings.map(w =>
        h(
          "li",
          {},
          h("strong", { text: WARNINGS[w.code] || w.code || "Alerta" }),
          w.path ? h("span", { class: "muted" }, ` (${pathLabel(w.path)})`) : null,
          withDocs && w.documentId ? [" — ", link(docHref(w.documentId), "ver documento")] : null,
          w.message ? h("div", { class: "detail", text: w.message }) : null
        )
      )
    );
  }

  const kv = (k, ...v) => [h("dt", { text: k }), h("dd", {}, ...v)];
  /** A table cell labelled for the phone layout (one child: the label and the value are its grid). */
  const td = (label, content, cls) =>
    h("td", { "data-label": label, class: cls || null }, Array.isArray(content) ? h("div", {}, content) : content);

  function docTable(items) {
    if (!items.length) return muted("No hay documentos con estos filtros.");
    return h(
      "table",
      { class: "list docs" },
      h("thead", {}, h("tr", {}, ["Título", "Tipo", "Estado", "Zona", "Monto", "Alertas"].map(t => h("th", { text: t })))),
      h(
        "tbody",
        {},
        items.map(d =>
          h(
            "tr",
            { "data-id": d.id },
            td("Título", link(docHref(d.id), d.title || `(${TYPES[d.type] || d.type} sin título)`)),
            td("Tipo", TYPES[d.type] || d.type),
            td("Estado", badge(d.type, d.status)),
            td("Zona", d.zone || "—"),
            td("Monto", d.amountText || money(d.amount), "num"),
            td("Alertas", d.warnings ? h("span", { class: "badge s-warn", text: String(d.warnings) }) : "0", "num")
          )
        )
      )
    );
  }

  function pager(body, go) {
    const perPage = Number(body.perPage) || PER_PAGE;
    const total = Number(body.total) || 0;
    const page = Number(body.page) || 1;
    const pages = Math.max(1, Math.ceil(total / perPage));
    if (pages <= 1) return h("p", { class: "muted pager", text: `${num(total)} en total` });
    return h(
      "p",
      { class: "pager" },
      h("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1), text: "← Anterior" }),
      h("span", { text: ` Página ${page} de ${pages} (${num(total)} en total) ` }),
      h("button", { type: "button", disabled: page >= pages, onclick: () => go(page + 1), text: "Siguiente →" })
    );
  }

  // ---- A document: state, warnings, conflicts, timeline, diff ---------------------------------

  function docView(main, id) {
    const ok = alive();
    const content = h("div", { class: "doc" }, muted("Cargando el documento…"));
    const timelineBox = h("div");
    const diffBox = h("div", { id: "diff", "aria-live": "polite" });
    const updated = h("p", { class: "updated muted" });
    main.append(content, updated);
    const pick = { from: null, to: null };
    let history = [];
    let names = {};
    let docType = "";

    async function refresh() {
      const enc = encodeURIComponent(id);
      const [doc, hist, conf] = await Promise.allSettled([
        getJson(`/docs/${enc}`),
        getJson(`/docs/${enc}/history`),
        getJson(`/docs/${enc}/conflicts`),
      ]);
      if (!ok()) return;
      if (doc.status === "rejected") {
        content.replaceChildren(h("h1", { text: "Documento" }), errorBox(doc.reason), link("#/", "Volver al distrito"));
        return;
      }
      const d = doc.value;
      docType = d.type;
      learnDistrict(d.district, d.districtName);
      history = hist.status === "fulfilled" ? hist.value.changes || [] : [];
      names = nameMap(d, history);
      let extra = {};
      if (d.type === "acta") extra = await proposalTitles(d.district);
      if (!ok()) return;

      const st = d.state || {};
      document.title = `${d.title || TYPES[d.type] || "Documento"} — Minka`;
      const parts = [
        h(
          "nav",
          { class: "crumbs" },
          link(S.claims.district === "*" ? `#/?district=${encodeURIComponent(d.district)}` : "#/", `← ${d.districtName || districtLabel(d.district)}`)
        ),
        h(
          "div",
          { class: "page-head" },
          h("p", { class: "kind", text: `${TYPES[d.type] || d.type} · ${d.districtName || ""} · ${d.processYear || ""}` }),
          h("h1", { text: d.title || st.title || `(${TYPES[d.type] || "documento"} sin título)` }),
          badge(d.type, d.status)
        ),
      ];
      if (d.type === "acta") parts.push(sealBanner(d, names));
      if ((d.warnings || []).length) parts.push(section(`Alertas (${d.warnings.length})`, warningList(d.warnings, false)));
      if (conf.status === "fulfilled") {
        const list = conf.value.conflicts || [];
        if (list.length) parts.push(conflictCard(list, names, d.type));
      } else parts.push(section("Conflictos", errorBox(conf.reason)));
      if (d.type === "proposal") parts.push(...proposalCards(st, names));
      else if (d.type === "acta") parts.push(...actaCards(d, st, names, extra));
      else if (d.type === "observation") parts.push(...observationCards(st, names));
      else if (d.type === "process") parts.push(...processCards(st));
      else parts.push(section("Contenido", h("pre", { class: "json", text: JSON.stringify(st, null, 2) })));
      parts.push(
        section(
          "Datos técnicos",
          h(
            "dl",
            { class: "kv" },
            kv("Identificador", h("code", { text: d.id })),
            kv("Versión actual (heads)", (d.heads || []).map(x => h("code", { class: "hash", text: x })))
          )
        )
      );

      if (hist.status === "fulfilled") renderTimeline();
      else timelineBox.replaceChildren(errorBox(hist.reason));
      parts.push(
        section(
          "Historia de cambios",
          h("p", { class: "muted", text: "Quién cambió qué y cuándo. Para ver la diferencia entre dos versiones, marca una versión A (desde) y una B (hasta) y pulsa «Comparar versiones»." }),
          timelineBox,
          diffBox
        )
      );
      content.replaceChildren(...parts);
      updated.textContent = `Datos al ${when(Date.now())}`;
    }

    function renderTimeline() {
      if (!history.length) {
        timelineBox.replaceChildren(muted("Sin cambios registrados."));
        return;
      }
      const hashes = history.map(c => c.hash);
      if (!hashes.includes(pick.from)) pick.from = null;
      if (!hashes.includes(pick.to)) pick.to = null;
      const list = h("ol", { class: "timeline", id: "timeline" });
      history.forEach((c, i) => {
        const who = c.user ? c.user.name || c.user.id : `Usuario desconocido (actor ${short(c.actor)}…)`;
        const descs = (c.descriptions || []).length
          ? c.descriptions
          : (c.changed || []).map(x => `${ACTIONS[x.action] || x.action} ${pathLabel(x.path, names)}`);
        const radio = (name, letter) =>
          h(
            "label",
            { class: "pick" },
            h("input", {
              type: "radio",
              name: `pick-${name}`,
              value: c.hash,
              checked: pick[name] === c.hash,
              "aria-label": `Versión ${i + 1} como ${letter}`,
              onchange: () => (pick[name] = c.hash),
            }),
            ` ${letter}`
          );
        list.append(
          h(
            "li",
            { class: "change", "data-hash": c.hash },
            h("div", { class: "picks" }, radio("from", "A"), radio("to", "B")),
            h(
              "div",
              { class: "body" },
              h(
                "p",
                { class: "meta" },
                h("span", { class: "n", text: `v${i + 1}` }),
                " ",
                h("strong", { class: "author", text: who }),
                " · ",
                timeEl(c.time)
              ),
              descs.length ? h("ul", { class: "descs" }, descs.map(t => h("li", { text: t }))) : null,
              c.message ? h("p", { class: "msg" }, "Mensaje: ", h("q", { text: c.message })) : null,
              h("p", { class: "hashline" }, h("code", { class: "short", title: c.hash, text: short(c.hash) }))
            )
          )
        );
      });
      const compare = h("button", { type: "button", class: "primary", id: "compare", text: "Comparar versiones" });
      compare.addEventListener("click", () => showDiff(compare));
      timelineBox.replaceChildren(list, h("div", { class: "actions" }, compare));
    }

    async function showDiff(button) {
      if (!pick.from || !pick.to) {
        diffBox.replaceChildren(h("p", { class: "error", text: "Marca una versión A (desde) y una versión B (hasta)." }));
        return;
      }
      if (pick.from === pick.to) {
        diffBox.replaceChildren(muted("Elegiste la misma versión dos veces: no hay diferencias."));
        return;
      }
      button.disabled = true;
      const pos = x => history.findIndex(c => c.hash === x) + 1;
      try {
        const r = await getJson(
          `/docs/${encodeURIComponent(id)}/diff?from=${encodeURIComponent(pick.from)}&to=${encodeURIComponent(pick.to)}`
        );
        if (!ok()) return;
        const rows = r.changes || [];
        diffBox.replaceChildren(
          h("h3", { text: `Diferencias de v${pos(pick.from)} (A) a v${pos(pick.to)} (B)` }),
          rows.length
            ? h(
                "table",
                { class: "list diff" },
                h("thead", {}, h("tr", {}, ["Campo", "Antes (A)", "Después (B)"].map(t => h("th", { text: t })))),
                h(
                  "tbody",
                  {},
                  rows.map(c =>
                    h(
                      "tr",
                      {},
                      td("Campo", [h("strong", { text: pathLabel(c.path, names) }), c.description ? h("div", { class: "detail", text: c.description }) : null]),
                      td("Antes (A)", h("pre", { class: `val before${c.before == null ? " empty" : ""}`, text: valueText(c.before, c.path, docType) })),
                      td("Después (B)", h("pre", { class: `val after${c.after == null ? " empty" : ""}`, text: valueText(c.after, c.path, docType) }))
                    )
                  )
                )
              )
            : muted("No hay diferencias entre estas dos versiones.")
        );
      } catch (e) {
        if (ok()) diffBox.replaceChildren(errorBox(e));
      } finally {
        button.disabled = false;
      }
    }

    return { refresh, relevant: ev => ev.id === id };
  }

  /** User id → name, from the history (the server maps actors to users) and the document. */
  function nameMap(d, history) {
    const names = {};
    for (const c of history) if (c.user && c.user.id && c.user.name) names[c.user.id] = c.user.name;
    const att = (d.state && d.state.attendees) || {};
    for (const [u, a] of Object.entries(att)) if (a && a.name) names[u] = a.name;
    if (S.claims && S.claims.sub && S.claims.name) names[S.claims.sub] = S.claims.name;
    return names;
  }
  const person = (names, u) => (u == null ? "—" : names[u] ? `${names[u]} (${u})` : String(u));

  async function proposalTitles(district) {
    const titles = {};
    try {
      const p = new URLSearchParams({ type: "proposal", perPage: "100" });
      if (S.claims.district === "*" && district) p.set("district", district);
      const body = paged(await getJson(`/docs?${p}`));
      for (const d of body.items || []) titles[d.id] = d.title;
    } catch {
      // titles are a nicety: the ids still link
    }
    return titles;
  }

  function conflictCard(list, names, type) {
    return h(
      "section",
      { class: "card conflicts", id: "conflicts" },
      h("h2", { text: "Conflictos por revisar" }),
      list.map(c =>
        h(
          "div",
          { class: "conflict" },
          h(
            "p",
            {},
            h("strong", { text: `${(c.values || []).length === 2 ? "Dos" : (c.values || []).length} personas cambiaron este campo: ` }),
            pathLabel(c.path, names)
          ),
          h(
            "ul",
            {},
            (c.values || []).map(v =>
              h(
                "li",
                {},
                h("q", { text: valueText(v.value, c.path, type) }),
                " — escrito por ",
                h("strong", { text: v.user ? v.user.name || v.user.id : `actor ${short(v.actor)}…` })
              )
            )
          ),
          h("p", { class: "muted", text: "Minka conserva ambos valores; se muestra uno de ellos hasta que alguien con permiso lo corrija." })
        )
      )
    );
  }

  function proposalCards(st, names) {
    const authors = [st.createdBy, ...Object.keys(st.coauthors || {})].filter(Boolean);
    const supporters = Object.keys(st.supporters || {});
    const ev = st.evaluation || {};
    const comments = Array.isArray(st.comments) ? st.comments : [];
    const scores = st.scores || {};
    const criteria = [...new Set(Object.values(scores).flatMap(s => Object.keys(s || {})))];
    return [
      section(
        "Propuesta",
        h("p", { class: "prose", text: st.description || "(sin descripción)" }),
        h(
          "dl",
          { class: "kv" },
          kv("Zona", st.zone || "—"),
          kv("Categoría", st.category || "—"),
          kv("Beneficiarios", num(st.beneficiaries)),
          kv("Costo estimado", money(st.estimatedCost)),
          kv("Cofinanciamiento", money(st.cofinancing)),
          kv("Autores", authors.length ? authors.map(u => person(names, u)).join("; ") : "—"),
          kv("Apoyos", h("span", { id: "supporters", text: `${supporters.length} vecino${supporters.length === 1 ? "" : "s"}` }))
        )
      ),
      section(
        "Evaluación técnica",
        h(
          "dl",
          { class: "kv" },
          kv("¿Viable?", ev.viable === true ? "Sí" : ev.viable === false ? "No" : "Pendiente"),
          kv("Costo validado", money(ev.validatedCost)),
          kv("Evaluador", ev.evaluator ? person(names, ev.evaluator) : "—"),
          kv("Notas", ev.notes || "—")
        ),
        criteria.length
          ? h(
              "table",
              { class: "list scores" },
              h("thead", {}, h("tr", {}, h("th", { text: "Evaluador" }), criteria.map(c => h("th", { text: c })))),
              h(
                "tbody",
                {},
                Object.entries(scores).map(([who, s]) =>
                  h("tr", {}, td("Evaluador", person(names, who)), criteria.map(c => td(c, num((s || {})[c]), "num")))
                )
              )
            )
          : muted("Sin puntajes todavía.")
      ),
      section(
        `Comentarios (${comments.length})`,
        comments.length
          ? h(
              "ul",
              { class: "comments" },
              comments.map(c =>
                h(
                  "li",
                  {},
                  h("p", { class: "meta" }, h("strong", { text: person(names, c.author) }), " · ", timeEl(c.at)),
                  h("p", { class: "prose", text: c.text || "" })
                )
              )
            )
          : muted("Sin comentarios.")
      ),
    ];
  }

  function sealBanner(d, names) {
    const seal = d.seal || {};
    if (!seal.sealed) {
      return h(
        "div",
        { class: "banner open", id: "seal" },
        h("p", { class: "big", text: d.status === "signing" ? "Acta en firma: todavía no está sellada y admite cambios." : "Acta en borrador: todavía no está sellada y admite cambios." })
      );
    }
    return h(
      "div",
      { class: "banner sealed", id: "seal", role: "status" },
      h("p", { class: "big", text: "Acta sellada — no admite cambios" }),
      h(
        "dl",
        { class: "kv" },
        kv("Sellada por", seal.sealedBy ? person(names, seal.sealedBy) : "—"),
        kv("Fecha del sellado", timeEl(seal.sealedAt)),
        kv("Huella SHA-256", h("code", { class: "hash seal-hash", id: "seal-hash", text: seal.sha256 || "—" })),
        kv("Versión sellada (heads)", (seal.heads || []).map(x => h("code", { class: "hash", text: x }))),
        kv(
          "Verificación",
          seal.verified === false
            ? h("strong", { class: "bad", text: "¡La huella NO coincide con el contenido guardado!" })
            : seal.verified === true
              ? "La huella coincide con el contenido guardado."
              : "—"
        )
      )
    );
  }

  function actaCards(d, st, names, titles) {
    const attendees = Object.entries(st.attendees || {});
    const signatures = st.signatures || {};
    const voters = attendees.filter(([, a]) => a && a.votes);
    const signedVoters = voters.filter(([u]) => signatures[u]).length;
    const prioritized = (Array.isArray(st.prioritized) ? st.prioritized : []).slice().sort((a, b) => (a.rank || 0) - (b.rank || 0));
    const total = prioritized.reduce((acc, p) => acc + (Number(p.amount) || 0), 0);
    const seal = d.seal || {};
    if (seal.sealedBy && !names[seal.sealedBy]) names[seal.sealedBy] = seal.sealedBy;
    return [
      section(
        "Acta",
        h(
          "dl",
          { class: "kv" },
          kv("Clase", ACTA_KIND[st.kind] || st.kind || "—"),
          kv("Fecha", isoDay(st.date)),
          kv("Lugar", st.place || "—"),
          kv("Estado", badge("acta", d.status)),
          kv("Comité de Vigilancia", Object.keys(st.committeeMembers || {}).map(u => person(names, u)).join("; ") || "—")
        )
      ),
      section(
        `Asistentes (${attendees.length})`,
        h(
          "table",
          { class: "list attendees" },
          h("thead", {}, h("tr", {}, ["Nombre", "Organización", "Voto", "Firma"].map(t => h("th", { text: t })))),
          h(
            "tbody",
            {},
            attendees.map(([u, a]) =>
              h(
                "tr",
                {},
                td("Nombre", (a && a.name) || u),
                td("Organización", (a && a.organization) || "—"),
                td("Voto", a && a.votes ? "Con voto" : "Sin voto (voz)"),
                td("Firma", signatures[u] ? h("span", {}, "Firmó el ", timeEl(signatures[u].at)) : "—")
              )
            )
          )
        )
      ),
      section(
        `Firmas: ${signedVoters} de ${voters.length} votantes${voters.length && signedVoters * 2 > voters.length ? " (mayoría alcanzada)" : ""}`,
        Object.keys(signatures).length
          ? h(
              "ul",
              { class: "plain signatures" },
              Object.entries(signatures).map(([u, s]) =>
                h("li", {}, h("strong", { text: person(names, u) }), " firmó el ", timeEl(s && s.at), s && s.device ? h("span", { class: "muted", text: ` desde ${s.device}` }) : null)
              )
            )
          : muted("Nadie ha firmado todavía.")
      ),
      section(
        `Acuerdos (${(st.agreements || []).length})`,
        (st.agreements || []).length ? h("ol", { class: "agreements" }, st.agreements.map(t => h("li", { class: "prose", text: String(t) }))) : muted("Sin acuerdos registrados.")
      ),
      section(
        "Proyectos priorizados",
        prioritized.length
          ? h(
              "table",
              { class: "list" },
              h("thead", {}, h("tr", {}, ["Puesto", "Propuesta", "Monto"].map(t => h("th", { text: t })))),
              h(
                "tbody",
                {},
                prioritized.map(p =>
                  h(
                    "tr",
                    {},
                    td("Puesto", p.rank ?? "—"),
                    td("Propuesta", link(docHref(p.proposalId), titles[p.proposalId] || p.proposalId)),
                    td("Monto", money(p.amount), "num")
                  )
                ),
                h("tr", { class: "total" }, td("", ""), td("Total", h("strong", { text: "Total priorizado" })), td("Monto", h("strong", { text: money(total) }), "num"))
              )
            )
          : muted("La lista priorizada está vacía.")
      ),
    ];
  }

  function observationCards(st, names) {
    const responses = Array.isArray(st.responses) ? st.responses : [];
    return [
      section(
        "Observación del Comité de Vigilancia",
        h("p", { class: "prose", text: st.description || "(sin descripción)" }),
        h(
          "dl",
          { class: "kv" },
          kv("Documento observado", st.target ? link(docHref(st.target), String(st.target)) : "—"),
          kv("Clase", st.kind || "—"),
          kv("Creada por", person(names, st.createdBy)),
          kv("Evidencias", (st.evidence || []).length ? h("ul", { class: "plain" }, st.evidence.map(e => h("li", { text: typeof e === "string" ? e : JSON.stringify(e) }))) : "—")
        )
      ),
      section(
        `Respuestas (${responses.length})`,
        responses.length
          ? h("ul", { class: "comments" }, responses.map(r => h("li", {}, h("p", { class: "meta" }, h("strong", { text: person(names, r.author) }), " · ", timeEl(r.at)), h("p", { class: "prose", text: r.text || "" }))))
          : muted("Sin respuestas todavía.")
      ),
    ];
  }

  function processCards(st) {
    return [
      section(
        "Proceso",
        h(
          "dl",
          { class: "kv" },
          kv("Fase", statusLabel("process", st.phase)),
          kv("Tope presupuestal del distrito", money(st.ceiling))
        ),
        h(
          "table",
          { class: "list" },
          h("thead", {}, h("tr", {}, h("th", { text: "Zona" }), h("th", { text: "Tope" }))),
          h("tbody", {}, Object.entries(st.zones || {}).map(([z, c]) => h("tr", {}, td("Zona", z), td("Tope", money(c), "num"))))
        )
      ),
      section(
        "Criterios de priorización",
        h(
          "ul",
          { class: "plain" },
          (st.criteria || []).map(c => h("li", {}, `${c.name}: ${num(c.weight)} %`))
        )
      ),
    ];
  }

  // ---- Quarantine -----------------------------------------------------------------------------

  function quarantineView(main, query) {
    const ok = alive();
    const f = {
      user: query.get("user") || "",
      document: query.get("document") || "",
      page: Math.max(1, Number(query.get("page")) || 1),
    };
    const user = h("input", { id: "q-user", name: "user", value: f.user, placeholder: "p. ej. comas-rosa-quispe", autocomplete: "off" });
    const doc = h("input", { id: "q-document", name: "document", value: f.document, placeholder: "identificador del documento", autocomplete: "off" });
    const listBox = h("div", {}, muted("Cargando…"));
    const updated = h("p", { class: "updated muted" });
    const apply = () => {
      f.user = user.value.trim();
      f.document = doc.value.trim();
      f.page = 1;
      sync();
      refresh();
    };
    const sync = () =>
      replaceQuery("/quarantine", [["user", f.user], ["document", f.document], ["page", f.page > 1 ? String(f.page) : ""]]);
    main.append(
      h("div", { class: "page-head" }, h("h1", { text: "Cuarentena: cambios rechazados" })),
      h(
        "p",
        { class: "muted" },
        "Cambios que llegaron de un teléfono y el servidor no aplicó porque su autor no tenía permiso. No se pierden: quedan aquí para revisión."
      ),
      h(
        "form",
        { class: "filters card", role: "search", onsubmit: ev => (ev.preventDefault(), apply()) },
        field("Usuario", user),
        field("Documento", doc),
        h("div", { class: "field" }, h("span", { class: "label-spacer", "aria-hidden": "true", text: "\u00a0" }), h("button", { type: "submit", text: "Filtrar" }))
      ),
      updated,
      listBox
    );
    let titles = null;

    async function refresh() {
      const p = new URLSearchParams();
      if (f.user) p.set("user", f.user);
      if (f.document) p.set("document", f.document);
      p.set("page", String(f.page));
      p.set("perPage", String(PER_PAGE));
      let body;
      try {
        const [q, t] = await Promise.all([getJson(`/quarantine?${p}`), titles ? titles : docTitles()]);
        body = paged(q);
        titles = t;
      } catch (e) {
        if (ok()) listBox.replaceChildren(errorBox(e));
        return;
      }
      if (!ok()) return;
      let items = body.items || [];
      // Filter here too, in case the server ignores the parameters.
      if (f.user) items = items.filter(e => e.user === f.user || String(e.userName || "").includes(f.user));
      if (f.document) items = items.filter(e => e.documentId === f.document);
      listBox.replaceChildren(
        items.length ? quarantineTable(items, titles) : muted("No hay cambios rechazados con estos filtros."),
        pager(body, page => {
          f.page = page;
          sync();
          refresh();
        })
      );
      updated.textContent = `Datos al ${when(Date.now())}`;
    }
    return { refresh, relevant: ev => S.claims.district === "*" || !ev.district || ev.district === S.claims.district };
  }

  async function docTitles() {
    const titles = {};
    try {
      const body = paged(await getJson("/docs?perPage=100"));
      for (const d of body.items || []) titles[d.id] = d.title;
    } catch {
      // the ids still link
    }
    return titles;
  }

  function quarantineTable(items, titles) {
    return h(
      "table",
      { class: "list quarantine", id: "quarantine" },
      h("thead", {}, h("tr", {}, ["Fecha y hora", "Enviado por", "Documento", "Motivo", "Campo", "Cambio"].map(t => h("th", { text: t })))),
      h(
        "tbody",
        {},
        items.map(e =>
          h(
            "tr",
            { "data-hash": e.hash },
            td("Fecha y hora", timeEl(e.time)),
            td("Enviado por", [h("strong", { text: e.userName || e.user || "—" }), e.userName && e.user ? h("div", { class: "muted", text: e.user }) : null]),
            td("Documento", [
              e.documentId ? link(docHref(e.documentId), titles[e.documentId] || `${String(e.documentId).slice(0, 10)}…`) : "—",
              e.district ? h("div", { class: "muted", text: districtLabel(e.district) }) : null,
            ]),
            td("Motivo", h("span", { class: "reason", text: e.reason || "—" })),
            td("Campo", e.path ? h("span", {}, pathLabel(e.path), h("div", { class: "muted" }, h("code", { text: e.path }))) : "—"),
            td("Cambio", h("code", { class: "short", title: e.hash || "", text: short(e.hash) }))
          )
        )
      )
    );
  }

  // ---- Start ----------------------------------------------------------------------------------

  function start() {
    loadSession();
    renderWho();
    $("#signout").addEventListener("click", () => signOut("Cerraste tu sesión."));
    window.addEventListener("hashchange", route);
    // A token that expires while the page is open ends the session (the API would answer 401).
    setInterval(() => {
      if (S.claims && expired(S.claims)) signOut("Tu sesión venció. Vuelve a ingresar con un token vigente.");
    }, 30_000);
    if (S.token) startLive();
    route();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
