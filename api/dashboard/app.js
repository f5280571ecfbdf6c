// patchmesh dashboard. It reads only the documented /v1/dashboard endpoints
// (docs/api.md, "Dashboard"): the session, the login and logout, and the
// event stream of views. Everything shown comes from those views; the
// script only lays them out. No inline script or style: the CSP forbids it.
'use strict';

(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  // A view arrives every second; after this long without one the node is
  // called unreachable even if the connection looks open.
  const STALE_MS = 3500;
  const STATE_ICON = { alive: '✓', dead: '✕', left: '–' };
  const HOLD_ICON = { held: '✓', missing: '…', unknown: '?' };
  // Machine states in the order the fleet grid shows them, each with its
  // kind: up to date, waiting or to check, failed, unknown. A state this
  // page does not know yet is shown after them, as unknown.
  const FLEET_STATES = ['applied', 'nothing-to-apply', 'unapplied', 'needs-check', 'kernel-upgrade-required',
    'apply-failed', 'check-failed', 'applied-with-bug', 'unknown'];
  const FLEET_KIND = {
    applied: 'good', 'nothing-to-apply': 'good', unapplied: 'wait', 'needs-check': 'wait', 'kernel-upgrade-required': 'wait',
    'apply-failed': 'bad', 'check-failed': 'bad', 'applied-with-bug': 'bad', unknown: 'unknown',
  };
  const FLEET_ICON = { good: '✓', wait: '!', bad: '✕', unknown: '?' };
  // A node's figures older than this, by the serving node's clock, are
  // marked old: several report intervals missed at the default 60 s.
  const FLEET_OLD_S = 300;

  const $ = (id) => document.getElementById(id);
  let csrf = '';
  let source = null;
  let lastView = null;
  let lastAt = 0;
  let selected = '';
  let watchdog = 0;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function ago(t) {
    if (!t || t.startsWith('0001')) return 'never';
    const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
    if (s < 90) return s + ' s ago';
    if (s < 5400) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }
  function bytes(n) {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }
  function setConn(kind, text) {
    const c = $('conn');
    c.className = 'conn conn-' + kind;
    c.textContent = text;
    c.dataset.state = kind;
  }

  // Session and login.

  async function session() {
    const r = await fetch('/v1/dashboard/session', { credentials: 'same-origin', cache: 'no-store' });
    if (!r.ok) throw new Error('session: HTTP ' + r.status);
    const s = await r.json();
    csrf = s.csrf;
    return s;
  }

  function showLogin(message) {
    stopStream();
    lastView = null;
    $('view').hidden = true;
    $('who').hidden = true;
    $('public').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('node-title').textContent = '';
    setConn('wait', 'Not logged in');
    $('login-user').focus();
  }

  function showView(s) {
    $('login').hidden = true;
    $('who').hidden = !s.authenticated;
    $('public').hidden = s.authenticated;
    $('who-name').textContent = s.authenticated ? 'Logged in as ' + s.user : '';
    $('view').hidden = false;
    startStream();
  }

  async function start() {
    try {
      const s = await session();
      if (s.authenticated || s.public_read) showView(s); else showLogin('');
    } catch (e) {
      setConn('down', 'This node is unreachable; retrying');
      setTimeout(start, 2000);
    }
  }

  async function post(path, body) {
    return fetch(path, {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('login-error').textContent = '';
    try {
      const r = await post('/v1/dashboard/login', { user: $('login-user').value, password: $('login-password').value });
      $('login-password').value = '';
      if (r.status === 401) { $('login-error').textContent = 'Wrong user or password.'; return; }
      if (!r.ok) { $('login-error').textContent = 'Login refused (HTTP ' + r.status + '); reload the page.'; return; }
      const s = await r.json();
      csrf = s.csrf;
      showView(s);
    } catch (e) {
      $('login-error').textContent = 'This node is unreachable.';
    }
  });

  $('public-login').addEventListener('click', () => showLogin(''));

  $('logout').addEventListener('click', async () => {
    const r = await post('/v1/dashboard/logout');
    if (r.status !== 204) { setConn('down', 'Logout refused (HTTP ' + r.status + ')'); return; }
    const s = await session();
    if (s.public_read) showView(s); else showLogin('Logged out.');
  });

  // The stream of views.

  function stopStream() {
    if (source) source.close();
    source = null;
    clearInterval(watchdog);
  }

  function startStream() {
    stopStream();
    setConn('wait', 'Connecting…');
    source = new EventSource('/v1/dashboard/events');
    source.addEventListener('view', (ev) => {
      lastAt = Date.now();
      $('view').classList.remove('stale');
      const v = JSON.parse(ev.data);
      setConn('live', 'Live: ' + v.node.name + ' answers');
      render(v);
    });
    source.addEventListener('error', async () => {
      if (source && source.readyState === EventSource.CLOSED) {
        // The node answered but refused the stream (logged out, or a login
        // that expired), or is gone: ask again who we are.
        stopStream();
        try {
          const s = await session();
          if (s.authenticated || s.public_read) setTimeout(startStream, 1000); else showLogin('Your session has ended; log in again.');
        } catch (e) {
          unreachable();
          setTimeout(start, 2000);
        }
        return;
      }
      unreachable();
    });
    watchdog = setInterval(() => {
      if (lastAt && Date.now() - lastAt > STALE_MS) {
        unreachable();
        startStream(); // a hung connection never errors: open a new one
      }
    }, 1000);
  }

  function unreachable() {
    $('view').classList.add('stale');
    const name = lastView ? lastView.node.name : 'this node';
    setConn('down', 'Unreachable: ' + name + ' has not answered since ' + (lastAt ? new Date(lastAt).toLocaleTimeString() : 'the page opened') + '; retrying');
  }

  // Rendering.

  function render(v) {
    lastView = v;
    $('node-title').textContent = '— ' + v.node.name + ' (' + v.node.role + ', ' + v.node.version + ')';
    $('topo-self').textContent = v.topology.self;
    if (!selected) selected = v.topology.self;
    renderGraph(v);
    renderLinks(v);
    renderDetail(v);
    renderPatches(v);
    renderFleet(v);
    renderRollouts(v);
    renderUnavailable(v);
    $('updated').textContent = 'Updated ' + new Date(v.time).toLocaleTimeString() + ' from ' + v.node.name;
  }

  // layers puts each node at its depth from a node without upstream:
  // hub, then regions, then edges.
  function layers(v) {
    const up = {};
    for (const l of v.topology.links) if (l.from) up[l.to] = l.from;
    const depth = {};
    const find = (n, seen) => {
      if (depth[n] !== undefined) return depth[n];
      if (!up[n] || seen.has(n)) return 0;
      seen.add(n);
      return find(up[n], seen) + 1;
    };
    const rows = [];
    for (const n of v.topology.nodes) {
      const d = find(n.name, new Set());
      depth[n.name] = d;
      (rows[d] = rows[d] || []).push(n);
    }
    return rows.filter(Boolean);
  }

  function renderGraph(v) {
    const g = $('graph');
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.node : '';
    g.replaceChildren();
    const rows = layers(v);
    const W = 190, H = 58, GX = 40, GY = 70;
    const widest = Math.max(1, ...rows.map((r) => r.length));
    const LABEL = 60; // room right of the last column for a link's label
    const inner = widest * (W + GX) + GX;
    const width = inner + LABEL;
    const height = rows.length * (H + GY) + GY / 2;
    g.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    // Fit the panel, but keep the text readable: a mesh too wide for that
    // scrolls sideways instead, and a small one grows only so much.
    const avail = g.parentElement.clientWidth || width;
    const scale = Math.min(1.6, Math.max(0.7, avail / width));
    g.setAttribute('width', Math.round(width * scale));
    g.setAttribute('height', Math.round(height * scale));
    const pos = {};
    rows.forEach((row, d) => {
      const off = (inner - row.length * (W + GX) + GX) / 2;
      row.forEach((n, i) => { pos[n.name] = { x: off + i * (W + GX), y: GY / 2 + d * (H + GY) }; });
    });
    const secs = lagSeconds(v);
    for (const l of v.topology.links) {
      const a = pos[l.from], b = pos[l.to];
      if (!a || !b) continue;
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
      g.append(svg('path', {
        class: 'link' + (l.healthy ? '' : ' unhealthy'), 'data-from': l.from, 'data-to': l.to,
        d: 'M' + x1 + ',' + y1 + ' C' + x1 + ',' + (y1 + GY / 2) + ' ' + x2 + ',' + (y2 - GY / 2) + ' ' + x2 + ',' + y2,
      }));
      // Beside the downstream's end of the link, on two short lines, so
      // that the labels of a node's several links do not overlap.
      let first = 'lag ' + linkLagEvents(v, l) + ' ev';
      if (secs[l.to] !== undefined) first += ' · ' + secs[l.to].toFixed(1) + ' s';
      const notes = [];
      if (!l.healthy) notes.push('unhealthy');
      if (recentMove(v, l.to)) notes.push('⇄ failed over');
      const text = svg('text', { class: 'link-label', x: x2 + 6, y: y2 - GY / 2 + 4 });
      text.append(svg('tspan', { x: x2 + 6 }, first));
      if (notes.length) text.append(svg('tspan', { x: x2 + 6, dy: 13, class: 'link-note' }, notes.join(' · ')));
      g.append(text);
    }
    for (const n of v.topology.nodes) {
      const p = pos[n.name];
      const cls = 'node state-' + n.state + (n.name === v.topology.self ? ' self' : '') + (n.name === selected ? ' selected' : '');
      const grp = svg('g', {
        class: cls, transform: 'translate(' + p.x + ',' + p.y + ')', tabindex: 0, role: 'button',
        'data-node': n.name, 'data-state': n.state,
        'aria-label': n.name + ', ' + n.role + ', ' + n.state + (n.name === v.topology.self ? ', this node' : ''),
      });
      grp.append(svg('rect', { width: W, height: H }));
      grp.append(svg('text', { class: 'name', x: 10, y: 19 }, n.name + (n.name === v.topology.self ? ' (this node)' : '')));
      grp.append(svg('text', { class: 'meta', x: 10, y: 35 }, n.role + ' · ' + (n.dc || 'no dc') + ' · lag ' + (n.progress_as_of ? n.lag : '?')));
      grp.append(svg('text', { class: 'state', x: 10, y: 50 }, STATE_ICON[n.state] + ' ' + n.state));
      const choose = () => { selected = n.name; render(lastView); const f = $('graph').querySelector('[data-node="' + CSS.escape(n.name) + '"]'); if (f) f.focus(); };
      grp.addEventListener('click', choose);
      grp.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); choose(); } });
      g.append(grp);
    }
    if (focused) {
      const f = g.querySelector('[data-node="' + CSS.escape(focused) + '"]');
      if (f) f.focus();
    }
  }

  // linkLagEvents is a link's lag in hub records, or '?' where this node
  // does not know its downstream's progress: progress travels up the sync
  // links, so a node knows its own and its subtree's, the hub everyone's.
  function linkLagEvents(v, l) {
    const n = v.topology.nodes.find((x) => x.name === l.to);
    return n && n.progress_as_of ? String(l.lag_events) : '?';
  }

  // lagSeconds gives each downstream's lag in seconds, as the node
  // serving the view measures it (link_lag_seconds).
  function lagSeconds(v) {
    return v.link_lag_seconds || {};
  }

  // recentMove is the downstream's upstream move of the last 10 minutes.
  function recentMove(v, name) {
    return (v.upstream_moves || []).find((m) => m.node === name && Date.now() - Date.parse(m.at) < 600000);
  }

  function badge(state, text) {
    return el('span', { class: 'badge state-' + state }, STATE_ICON[state] + ' ' + text);
  }

  function renderLinks(v) {
    const body = $('links').tBodies[0];
    body.replaceChildren();
    const secs = lagSeconds(v);
    for (const l of v.topology.links) {
      const tr = el('tr', { 'data-to': l.to });
      tr.append(el('td', {}, l.from || '(unknown: ' + l.from_url + ')'));
      tr.append(el('td', {}, l.to));
      tr.append(el('td', {}, linkLagEvents(v, l)));
      tr.append(el('td', {}, secs[l.to] !== undefined ? secs[l.to].toFixed(1) : '—'));
      const td = el('td');
      td.append(l.healthy ? badge('alive', 'healthy') : badge('dead', 'an end is not alive'));
      tr.append(td);
      body.append(tr);
    }
    if (!v.topology.links.length) {
      const tr = el('tr');
      tr.append(el('td', { colspan: 5, class: 'muted' }, 'No links: no member pulls from an upstream.'));
      body.append(tr);
    }
    const moves = $('moves');
    moves.replaceChildren();
    for (const m of v.upstream_moves || []) {
      moves.append(el('li', { 'data-node': m.node }, '⇄ ' + m.node + ' moved from ' + (m.from_node || m.from) + ' to ' + (m.to_node || m.to) + ', ' + ago(m.at)));
    }
    if (!moves.children.length) moves.append(el('li', { class: 'muted' }, 'None seen in the last hour.'));
  }

  function renderDetail(v) {
    const n = v.topology.nodes.find((x) => x.name === selected) || v.topology.nodes[0];
    if (!n) return;
    $('detail-name').textContent = n.name;
    const dl = $('detail');
    dl.replaceChildren();
    const row = (k, val) => { dl.append(el('dt', {}, k)); const dd = el('dd'); if (val instanceof Node) dd.append(val); else dd.textContent = val; dl.append(dd); };
    row('State', badge(n.state, n.state + ' since ' + ago(n.since)));
    row('Role', n.role);
    row('Data centre', n.dc || '—');
    row('Version', n.version || '—');
    row('Tiers', (n.tiers || []).join(', ') || '—');
    const known = (x) => (n.progress_as_of ? String(x) : '? (not known here)');
    row('Head (log sequence)', known(n.head));
    row('Synced (hub sequence)', known(n.synced));
    row('Lag (hub records)', known(n.lag));
    row('Progress as of', n.progress_as_of ? ago(n.progress_as_of) : 'not known here: it travels up the sync links, to this node from its subtree only');
    row('API URL', n.url || '—');
    row('Upstream', n.upstream || '— (none)');
    row('Gossip address', n.addr || '—');
    const links = $('detail-links');
    links.replaceChildren();
    if (n.name !== v.topology.self) {
      const p = el('p', { class: 'muted' }, 'Last sync, errors, blobs and machines are known to ' + n.name + ' itself: ');
      if (n.url) p.append(el('a', { href: n.url + '/dashboard/' }, 'open its dashboard'));
      links.append(p);
      return;
    }
    row('Blobs stored', v.storage.error ? v.storage.error : v.storage.blobs + ' (' + bytes(v.storage.bytes) + ')');
    row('Machines served', v.machines.error ? v.machines.error : v.machines.count + (v.machines.more ? '+' : ''));
    row('Uptime', Math.round(v.node.uptime_seconds) + ' s');
    if (!v.sync.links.length) { links.append(el('p', { class: 'muted' }, 'No upstream links: this node is where records start.')); return; }
    const t = el('table', { class: 'table' });
    const head = el('tr');
    for (const h of ['Tier', 'Upstream', 'State', 'Synced / hub head', 'Lag', 'Last sync', 'Last error']) head.append(el('th', { scope: 'col' }, h));
    t.append(head);
    for (const l of v.sync.links) {
      const tr = el('tr');
      const failover = l.upstreams && l.upstreams.length && l.upstream !== l.upstreams[0];
      tr.append(el('td', {}, l.tier + (l.hub_tier && l.hub_tier !== l.tier ? ' (hub ' + l.hub_tier + ')' : '')));
      tr.append(el('td', {}, (l.upstream || '—') + (failover ? ' ⇄ failed over from ' + l.upstreams[0] : '')));
      tr.append(el('td', {}, l.state));
      tr.append(el('td', {}, l.hub_seq + ' / ' + l.hub_head));
      tr.append(el('td', {}, l.lag_events + ' ev, ' + l.lag_seconds.toFixed(1) + ' s'));
      tr.append(el('td', {}, ago(l.last_success)));
      tr.append(el('td', {}, l.last_error ? l.last_error + ' (' + ago(l.last_error_at) + ')' : 'none'));
      t.append(tr);
    }
    links.append(t);
  }

  function renderPatches(v) {
    const body = $('patches').tBodies[0];
    body.replaceChildren();
    $('patches-empty').hidden = v.patches.length > 0;
    for (const p of v.patches) {
      const tr = el('tr', { 'data-digest': p.digest, 'data-held': p.held, 'data-expected': p.expected });
      const ver = el('td', {}, p.version + (p.withdrawn ? ' (withdrawn)' : ''));
      ver.append(el('br'), el('span', { class: 'mono muted', title: p.digest }, p.digest.slice(7, 19)));
      tr.append(ver);
      tr.append(el('td', {}, p.kernel + ' ' + p.arch));
      tr.append(el('td', {}, (p.tiers || []).join(' → ') || '—'));
      const prog = el('td');
      const done = p.expected > 0 && p.held === p.expected;
      const bar = el('progress', { max: Math.max(1, p.expected), value: p.held, 'aria-label': 'held by ' + p.held + ' of ' + p.expected + ' nodes' });
      prog.append(bar, el('span', { class: 'held-count' }, ' ' + p.held + ' / ' + p.expected + ' nodes' + (done ? ' — complete' : '')));
      const chips = el('div');
      for (const h of p.holders) {
        chips.append(el('span', {
          class: 'badge hold-' + h.state + (h.expected ? '' : ' not-expected'), 'data-node': h.node, 'data-hold': h.state,
          title: h.node + ': ' + h.state + (h.expected ? '' : ' (does not serve these tiers)'),
        }, HOLD_ICON[h.state] + ' ' + h.node + ' ' + h.state));
      }
      prog.append(chips);
      tr.append(prog);
      body.append(tr);
    }
  }

  function since(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return s + ' s ago';
    if (s < 5400) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }

  // renderFleet shows the fleet summary of the view (the body of GET
  // /v1/admin/reports/summary): per tier a grid of data centres by machine
  // state, each cell its count in text and shaded by its share of the row,
  // with totals; then how recent each node's figures are.
  function renderFleet(v) {
    const panel = $('panel-fleet');
    const f = v.fleet;
    const parts = ['fleet-total', 'fleet-grids', 'fleet-nodes'];
    panel.querySelector('.legend').hidden = !f;
    for (const id of parts) $(id).hidden = !f;
    panel.querySelector('h3').hidden = !f;
    const note = $('fleet-body');
    note.hidden = !!f;
    if (!f) {
      if (v.fleet_error) { note.textContent = v.fleet_error; panel.dataset.fleet = 'error'; }
      else if (!v.user) { note.textContent = 'Fleet reports are shown to logged-in administrators only.'; panel.dataset.fleet = 'login'; }
      else { note.textContent = 'Not available: this node sent no fleet summary.'; panel.dataset.fleet = 'none'; }
      return;
    }
    panel.dataset.fleet = 'shown';
    panel.dataset.machines = f.machines;
    const viewAt = Date.parse(v.time);

    // tier → dc → state → machines, summed over kernels and versions.
    const tiers = {};
    for (const t of f.totals) {
      const dcs = tiers[t.tier] = tiers[t.tier] || {};
      const row = dcs[t.dc] = dcs[t.dc] || {};
      row[t.state] = (row[t.state] || 0) + t.machines;
    }
    const dcNames = new Set(f.totals.map((t) => t.dc));
    $('fleet-total').textContent = f.machines + (f.machines === 1 ? ' machine' : ' machines') + ' in ' + f.node +
      '\'s subtree: ' + Object.keys(tiers).length + ' tier(s), ' + dcNames.size + ' data centre(s), ' + f.nodes.length +
      ' node(s) reporting. Totalled at ' + new Date(f.as_of).toLocaleTimeString() + '.';

    const grids = $('fleet-grids');
    grids.replaceChildren();
    if (!f.totals.length) grids.append(el('p', { class: 'muted' }, 'No machines reported yet.'));
    for (const tier of Object.keys(tiers).sort()) {
      const dcs = tiers[tier];
      const present = new Set();
      for (const row of Object.values(dcs)) for (const st of Object.keys(row)) present.add(st);
      const states = FLEET_STATES.filter((st) => present.has(st)).concat([...present].filter((st) => !FLEET_STATES.includes(st)).sort());
      const table = el('table', { class: 'table fleet-grid', 'data-tier': tier });
      let tierTotal = 0;
      for (const row of Object.values(dcs)) for (const n of Object.values(row)) tierTotal += n;
      table.append(el('caption', {}, 'Tier ' + tier + ': ' + tierTotal + ' machines'));
      const head = el('tr');
      head.append(el('th', { scope: 'col' }, 'Data centre'));
      for (const st of states) {
        const kind = FLEET_KIND[st] || 'unknown';
        head.append(el('th', { scope: 'col', class: 'fleet-state fleet-' + kind }, FLEET_ICON[kind] + ' ' + st));
      }
      head.append(el('th', { scope: 'col' }, 'Total'));
      const thead = el('thead');
      thead.append(head);
      table.append(thead);
      const body = el('tbody');
      const colTotals = {};
      for (const dc of Object.keys(dcs).sort()) {
        const row = dcs[dc];
        let rowTotal = 0;
        for (const n of Object.values(row)) rowTotal += n;
        const tr = el('tr', { 'data-dc': dc });
        tr.append(el('th', { scope: 'row' }, dc || '(no data centre)'));
        for (const st of states) {
          const n = row[st] || 0;
          colTotals[st] = (colTotals[st] || 0) + n;
          const kind = FLEET_KIND[st] || 'unknown';
          const level = n ? Math.max(1, Math.ceil(4 * n / rowTotal)) : 0;
          tr.append(el('td', {
            class: 'heat' + (n ? ' fleet-' + kind + ' l' + level : ' zero'),
            'data-tier': tier, 'data-dc': dc, 'data-state': st, 'data-machines': n,
            title: (dc || 'no data centre') + ', ' + st + ': ' + n + ' of ' + rowTotal + ' machines',
          }, n ? String(n) : '–'));
        }
        tr.append(el('td', { class: 'fleet-sum', 'data-tier': tier, 'data-dc': dc, 'data-machines': rowTotal }, String(rowTotal)));
        body.append(tr);
      }
      table.append(body);
      const foot = el('tr', { class: 'fleet-foot' });
      foot.append(el('th', { scope: 'row' }, 'All data centres'));
      for (const st of states) foot.append(el('td', { 'data-state': st, 'data-machines': colTotals[st] }, String(colTotals[st])));
      foot.append(el('td', { class: 'fleet-sum', 'data-machines': tierTotal }, String(tierTotal)));
      const tfoot = el('tfoot');
      tfoot.append(foot);
      table.append(tfoot);
      const wrap = el('div', { class: 'fleet-wrap' });
      wrap.append(table);
      grids.append(wrap);
    }

    const nodes = $('fleet-nodes').tBodies[0];
    nodes.replaceChildren();
    for (const n of f.nodes) {
      const age = (viewAt - Date.parse(n.as_of)) / 1000;
      const old = age > FLEET_OLD_S;
      const self = n.node === f.node;
      const tr = el('tr', { 'data-node': n.node, 'data-age': Math.round(age), class: old ? 'fleet-old' : '' });
      tr.append(el('td', {}, n.node + (self ? ' (this node)' : '')));
      tr.append(el('td', {}, n.dc || '—'));
      tr.append(el('td', {}, n.tier || (self ? 'every tier' : '—')));
      tr.append(el('td', { title: new Date(n.as_of).toLocaleString() }, (old ? '⚠ old: ' : '') + since(age)));
      tr.append(el('td', {}, self ? 'its own machines, live' :
        (n.rows ? 'per machine' : 'counts') + (n.received ? ', received ' + since((viewAt - Date.parse(n.received)) / 1000) : '')));
      nodes.append(tr);
    }
  }

  // dur writes a span of seconds in words: 45 s, 6 min, 2 h 30 min.
  function dur(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return s + ' s';
    const mins = Math.round(s / 60);
    if (mins < 60) return mins + ' min';
    const h = Math.floor(mins / 60), m = mins % 60;
    return h + ' h' + (m ? ' ' + m + ' min' : '');
  }
  function clock(t) { return new Date(t).toLocaleTimeString(); }

  // Rollout states and wave states, each with its icon and words, so that
  // colour is never the only sign.
  const ROLLOUT_STATE = {
    active: ['▶', 'active'], halted: ['‖', 'halted'], completed: ['✓', 'completed'], aborted: ['✕', 'aborted'],
  };
  // Rollouts the reader folded, by ID: the panel is drawn anew each
  // second and keeps them folded. Read from the page just before each
  // redraw, not from "toggle" events: those fire a task later, so a view
  // arriving between a fold and its event would redraw the rollout open
  // and the new box's own event would then forget the fold.
  const folded = new Set();

  // renderRollouts shows the view's rollouts (GET /v1/admin/rollouts, as
  // this node holds the hub's signed state): each with its gate, a halted
  // one's reason, and its waves in order, each open since when or waiting
  // (and when its delay ends), with how many machines of its data centres
  // run the rollout's version, from the fleet reports.
  function renderRollouts(v) {
    const panel = $('panel-rollouts');
    const list = $('rollouts-list');
    const note = $('rollouts-body');
    const ros = v.rollouts;
    const shown = !!ros && !v.unavailable.includes('rollouts');
    list.hidden = !shown;
    panel.querySelector('.legend').hidden = !shown;
    note.hidden = shown && ros.length > 0;
    if (!shown) {
      if (v.unavailable.includes('rollouts')) note.textContent = "Not available: this node's API does not offer rollouts yet.";
      else if (!v.user) note.textContent = 'Rollouts are shown to logged-in administrators only.';
      else note.textContent = 'Not available: this node sent no rollouts.';
      panel.dataset.rollouts = 'none';
      return;
    }
    panel.dataset.rollouts = String(ros.length);
    if (!ros.length) note.textContent = 'No live rollout, and none finished in the last day.';
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.rolloutSummary : '';
    const viewAt = Date.parse(v.time);
    for (const box of list.querySelectorAll('details[data-rollout]')) {
      if (box.open) folded.delete(box.dataset.rollout); else folded.add(box.dataset.rollout);
    }
    list.replaceChildren();
    for (const r of ros) {
      const [icon, word] = ROLLOUT_STATE[r.state] || ['?', r.state];
      const box = el('details', { class: 'rollout rollout-' + r.state, 'data-rollout': r.id, 'data-state': r.state });
      if (!folded.has(r.id)) box.open = true;
      const open = (r.opened || []).length;
      const sum = el('summary', { 'data-rollout-summary': r.id });
      sum.append(el('span', { class: 'rollout-title' }, r.version + ' on tier ' + r.tier));
      sum.append(el('span', { class: 'badge rollout-state rollout-' + r.state }, icon + ' ' + word));
      sum.append(el('span', { class: 'muted' }, ' ' + open + ' of ' + r.waves.length + ' waves open · ' +
        (r.state === 'active' || r.state === 'halted' ? 'planned ' + since((viewAt - Date.parse(r.created)) / 1000) : word + ' ' + since((viewAt - Date.parse(r.updated)) / 1000))));
      box.append(sum);
      const g = r.gate;
      box.append(el('p', { class: 'rollout-gate' }, 'Gate before each next wave: at least ' + g.min_reporting + ' machine' + (g.min_reporting === 1 ? '' : 's') +
        ' of the open waves report ' + r.version + ', fewer than ' + g.max_failed_percent + '% of them failed (apply-failed or check-failed), held for ' + dur(g.soak_seconds) +
        (r.ack_failed ? '; ' + r.ack_failed + ' failed machines accepted on resume' : '') + '.'));
      if (r.state === 'halted') {
        box.append(el('p', { class: 'rollout-reason', role: 'note' }, '‖ Halted: ' + (r.reason || 'no reason given') + '. No further wave opens until the hub resumes it.'));
      } else if (r.state === 'aborted') {
        box.append(el('p', { class: 'rollout-reason', role: 'note' }, '✕ Aborted: ' + r.version + ' is withdrawn from tier ' + r.tier + '.'));
      }
      const waves = el('ol', { class: 'waves' });
      r.waves.forEach((w, i) => {
        const ws = (r.wave_status || [])[i] || { state: i < open ? 'open' : 'waiting', dcs: [] };
        const li = el('li', { class: 'wave wave-' + ws.state, 'data-wave': i + 1, 'data-wave-state': ws.state });
        const head = el('p', { class: 'wave-head' });
        head.append(el('strong', {}, 'Wave ' + (i + 1) + ': ' + w.dc));
        head.append(el('span', { class: 'muted' }, ' · ' + (w.percent ? w.percent + '% of the machines' : 'every machine') + ' · ' +
          dur(w.after_seconds) + ' after ' + (i ? 'wave ' + i + ' opens' : 'the plan')));
        let st;
        if (ws.state === 'open') {
          st = '✓ open since ' + clock(ws.opened_at) + ' (' + since((viewAt - Date.parse(ws.opened_at)) / 1000) + ')';
        } else if (ws.opens_at) {
          const left = (Date.parse(ws.opens_at) - viewAt) / 1000;
          st = '… waiting: next, opens at ' + clock(ws.opens_at) + (left > 0 ? ' (in ' + dur(left) + ')' : ' or once the gate passes') +
            (i ? ', if the gate passes' : '');
        } else if (r.state === 'halted') {
          st = '‖ waiting: the rollout is halted';
        } else if (r.state === 'active') {
          st = '… waiting for wave ' + i;
        } else {
          st = '– never opened (' + word + ')';
        }
        head.append(el('span', { class: 'wave-state wave-' + ws.state }, ' ' + st));
        li.append(head);
        li.append(reachTable(r, ws));
        waves.append(li);
      });
      box.append(waves);
      list.append(box);
    }
    if (focused) {
      const f = list.querySelector('[data-rollout-summary="' + CSS.escape(focused) + '"]');
      if (f) f.focus();
    }
  }

  // reachTable shows, per data centre of a wave, its machines of the
  // rollout's tier on the version: applied, failed, otherwise; and not.
  function reachTable(r, ws) {
    if (!ws.dcs || !ws.dcs.length) return el('p', { class: 'muted reach-none' }, 'No node or fleet report of a data centre matching ' + (r.waves.length ? 'this wave' : '') + ' yet.');
    const t = el('table', { class: 'table reach' });
    const head = el('tr');
    for (const h of ['Data centre', 'Applied ' + r.version, 'Failed on it', 'Other state on it', 'Not on it', 'Reach']) head.append(el('th', { scope: 'col' }, h));
    const thead = el('thead');
    thead.append(head);
    t.append(thead);
    const body = el('tbody');
    for (const d of ws.dcs) {
      const other = d.on_version - d.applied - d.failed;
      const tr = el('tr', { 'data-dc': d.dc, 'data-applied': d.applied, 'data-failed': d.failed, 'data-machines': d.machines });
      tr.append(el('th', { scope: 'row' }, d.dc));
      tr.append(el('td', {}, '✓ ' + d.applied));
      tr.append(el('td', { class: d.failed ? 'reach-bad' : '' }, (d.failed ? '✕ ' : '') + d.failed));
      tr.append(el('td', {}, String(other)));
      tr.append(el('td', {}, String(d.machines - d.on_version)));
      const cell = el('td');
      cell.append(el('progress', { max: Math.max(1, d.machines), value: d.applied, 'aria-label': d.applied + ' of ' + d.machines + ' machines applied ' + r.version }),
        el('span', {}, ' ' + d.applied + ' / ' + d.machines + (d.machines ? '' : ' (none reporting)')));
      tr.append(cell);
      body.append(tr);
    }
    t.append(body);
    const wrap = el('div', { class: 'fleet-wrap' });
    wrap.append(t);
    return wrap;
  }

  // renderUnavailable marks the panels the node's API does not offer yet.
  // A panel the API offers later gets its render function beside
  // renderFleet and renderRollouts, called from render, and its name
  // leaves v.unavailable.
  function renderUnavailable(v) {
    for (const name of ['fleet', 'rollouts']) {
      const panel = $('panel-' + name);
      panel.dataset.available = v.unavailable.includes(name) ? 'no' : 'yes';
    }
  }

  start();
})();
