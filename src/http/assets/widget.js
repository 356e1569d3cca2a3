/*! Tandem storefront widget: served by Tandem at /widget.js, plain JavaScript, no dependencies.
 *
 * <div data-tandem data-cart="22423,22697" data-touchpoint="checkout" data-k="4"></div>
 * <script src="https://recs.shop.example/widget.js" defer></script>
 *
 * Element attributes: data-cart, data-viewed (comma-separated ids), data-touchpoint, data-k,
 * data-user, data-session (used only when the shop gives them, never under Do Not Track or
 * Global Privacy Control), data-link and data-image (URL templates with {id}), data-heading,
 * data-heading-level, data-currency, data-locale.
 * Script attributes: data-endpoint (default: where this script came from), data-style="none"
 * (no default styles), data-timeout (ms, default 2000).
 * Markup: .tandem-heading, ul.tandem-list > li.tandem-item with .tandem-link, .tandem-image,
 * .tandem-title, .tandem-price, .tandem-reason, button.tandem-dismiss; styled through CSS
 * custom properties (--tandem-*) under zero-specificity rules any shop rule overrides.
 */
(function () {
  'use strict';
  // Loaded twice, or a browser without fetch: do nothing rather than fail.
  if (window.Tandem || !window.fetch || !window.Promise) return;
  var script = document.currentScript;
  var opts = (script && script.dataset) || {};
  var endpoint = (opts.endpoint || (script && script.src ? new URL(script.src, location.href).origin : '')).replace(/\/$/, '');
  var timeoutMs = parseInt(opts.timeout, 10) || 2000;
  var FLUSH_MS = 1500;
  var VISIBLE_MS = 1000;
  var GET_LIMIT = 1800;
  var queue = [];
  var flushTimer = 0;
  var warned = false;
  var uid = 0;

  // Do Not Track or Global Privacy Control: no user or session id leaves the page.
  function optedOut() {
    var n = navigator;
    return n.globalPrivacyControl === true || n.doNotTrack === '1' || n.doNotTrack === 'yes' || window.doNotTrack === '1';
  }

  function warnOnce(message) {
    if (warned) return;
    warned = true;
    if (window.console && console.warn) console.warn('[tandem] ' + message);
  }

  function ids(value) {
    return (value || '').split(',').map(function (s) { return s.trim(); }).filter(Boolean);
  }

  function fill(template, id) {
    return template.replace(/\{id\}/g, encodeURIComponent(id));
  }

  function safeUrl(url) {
    if (!url) return '';
    try {
      var u = new URL(url, location.href);
      return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : '';
    } catch (e) {
      return '';
    }
  }

  function shopper(el) {
    if (optedOut()) return {};
    var who = {};
    if (el.dataset.user) who.user = el.dataset.user;
    if (el.dataset.session) who.session = el.dataset.session;
    return who;
  }

  function request(el) {
    var d = el.dataset;
    var body = { cart: ids(d.cart), touchpoint: d.touchpoint || 'checkout' };
    var viewed = ids(d.viewed);
    if (viewed.length) body.viewed = viewed;
    if (d.k) body.k = parseInt(d.k, 10);
    var who = shopper(el);
    if (who.user) body.user = who.user;
    if (who.session) body.session = who.session;
    if (optedOut()) body.personalize = false;
    var query = Object.keys(body).map(function (key) {
      var v = body[key];
      return key + '=' + encodeURIComponent(Array.isArray(v) ? v.join(',') : String(v));
    }).join('&');
    var url = endpoint + '/recommendations?' + query;
    var init = { method: 'GET', credentials: 'omit' };
    // Large carts go as a JSON body (a cross-origin one costs a cached preflight).
    if (url.length > GET_LIMIT) {
      url = endpoint + '/recommendations';
      init = { method: 'POST', credentials: 'omit', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
    }
    return { url: url, init: init };
  }

  function send(events, beacon) {
    var body = JSON.stringify(events);
    var url = endpoint + '/events';
    // text/plain keeps the call "simple": no CORS preflight, and sendBeacon allows it.
    if (beacon && navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], { type: 'text/plain' }))) return;
    try {
      fetch(url, { method: 'POST', body: body, keepalive: true, credentials: 'omit', headers: { 'Content-Type': 'text/plain' } })
        .then(function (r) { if (!r.ok) warnOnce('POST /events answered ' + r.status); })
        .catch(function () { warnOnce('POST /events failed'); });
    } catch (e) {
      warnOnce('POST /events failed');
    }
  }

  function flush(beacon) {
    clearTimeout(flushTimer);
    flushTimer = 0;
    if (!queue.length) return;
    var events = queue;
    queue = [];
    send(events, beacon);
  }

  function report(kind, item, served, el, now) {
    var event = {
      kind: kind, item_id: item.item_id, request_id: served.request_id, variant: served.variant,
      touchpoint: served.touchpoint, model_version: served.model_version
    };
    var who = shopper(el);
    if (who.user) event.user = who.user;
    if (who.session) event.session = who.session;
    queue.push(event);
    if (now) flush(false);
    else if (!flushTimer) flushTimer = setTimeout(function () { flush(false); }, FLUSH_MS);
  }

  // An impression: the item at least half visible for a second.
  function watch(li, onSeen) {
    if (!('IntersectionObserver' in window)) return;
    var timer = 0;
    var observer = new IntersectionObserver(function (entries) {
      var visible = entries[entries.length - 1].intersectionRatio >= 0.5;
      if (visible && !timer) {
        timer = setTimeout(function () { observer.disconnect(); onSeen(); }, VISIBLE_MS);
      } else if (!visible && timer) {
        clearTimeout(timer);
        timer = 0;
      }
    }, { threshold: [0, 0.5] });
    observer.observe(li);
    li._tandemObserver = observer;
  }

  function node(tag, className, text) {
    var e = document.createElement(tag);
    if (className) e.className = className;
    if (text != null) e.textContent = text;
    return e;
  }

  // Built while the request is in flight: a browser's first Intl formatter loads locale data
  // (tens of milliseconds), which must not delay the render.
  function formatter(el) {
    var currency = el.dataset.currency;
    if (!currency || el._tandemFormat) return;
    try {
      el._tandemFormat = new Intl.NumberFormat(el.dataset.locale || undefined, { style: 'currency', currency: currency });
    } catch (e) {
      el._tandemFormat = null;
    }
  }

  function price(value, el) {
    if (typeof value !== 'number') return '';
    return el._tandemFormat ? el._tandemFormat.format(value) : value.toFixed(2);
  }

  function render(el, served) {
    clear(el);
    var items = served.items || [];
    if (!items.length) {
      el.setAttribute('data-tandem-state', 'empty');
      return;
    }
    var d = el.dataset;
    var headingId = 'tandem-heading-' + (++uid);
    var level = Math.min(6, Math.max(1, parseInt(d.headingLevel, 10) || 2));
    var heading = node('h' + level, 'tandem-heading', d.heading || 'You may also like');
    heading.id = headingId;
    var list = node('ul', 'tandem-list');
    // Explicit: list-style:none makes some screen readers drop the list role.
    list.setAttribute('role', 'list');
    list.setAttribute('aria-labelledby', headingId);
    items.forEach(function (item) {
      var li = node('li', 'tandem-item');
      li.setAttribute('data-item-id', item.item_id);
      var href = d.link ? safeUrl(fill(d.link, item.item_id)) : '';
      var link = node(href ? 'a' : 'span', 'tandem-link');
      if (href) {
        link.href = href;
        link.addEventListener('click', function () { report('click', item, served, el, false); });
      }
      var src = safeUrl(item.image_link || (d.image ? fill(d.image, item.item_id) : ''));
      if (src) {
        var img = node('img', 'tandem-image');
        img.src = src;
        img.alt = '';
        img.loading = 'lazy';
        link.appendChild(img);
      }
      link.appendChild(node('span', 'tandem-title', item.title));
      li.appendChild(link);
      var shown = price(item.price, el);
      if (shown) li.appendChild(node('p', 'tandem-price', shown));
      if (item.reason && item.reason.text) li.appendChild(node('p', 'tandem-reason', item.reason.text));
      var dismiss = node('button', 'tandem-dismiss', 'Not interested');
      dismiss.type = 'button';
      dismiss.setAttribute('aria-label', 'Not interested in ' + item.title);
      dismiss.addEventListener('click', function () {
        report('dismiss', item, served, el, true);
        var next = li.nextElementSibling || li.previousElementSibling;
        unwatch(li);
        li.remove();
        var focus = next ? next.querySelector('a,button') : heading;
        if (!next) heading.tabIndex = -1;
        if (!list.children.length) clear(el);
        if (focus && focus.isConnected) focus.focus();
      });
      li.appendChild(dismiss);
      list.appendChild(li);
      watch(li, function () { report('impression', item, served, el, false); });
    });
    el.appendChild(heading);
    el.appendChild(list);
    el.setAttribute('data-tandem-state', 'rendered');
    el.setAttribute('data-tandem-request', served.request_id);
    el.setAttribute('data-tandem-variant', served.variant);
  }

  function unwatch(li) {
    if (li._tandemObserver) li._tandemObserver.disconnect();
  }

  function clear(el) {
    Array.prototype.forEach.call(el.querySelectorAll('.tandem-item'), unwatch);
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function load(el) {
    var r = request(el);
    var controller = window.AbortController ? new AbortController() : null;
    if (controller) r.init.signal = controller.signal;
    var timer = setTimeout(function () { if (controller) controller.abort(); }, timeoutMs);
    var mark = 'tandem:' + (++uid);
    el.setAttribute('data-tandem-state', 'loading');
    var pending = fetch(r.url, r.init);
    formatter(el);
    return pending.then(function (response) {
      if (!response.ok) throw new Error('GET /recommendations answered ' + response.status);
      performance.mark(mark + ':response');
      return response.json();
    }).then(function (served) {
      clearTimeout(timer);
      performance.mark(mark + ':parsed');
      render(el, served);
      performance.mark(mark + ':rendered');
      // From the response's headers (body read and parsed) and from the parsed body to the list.
      performance.measure('tandem:response-to-render', mark + ':response', mark + ':rendered');
      performance.measure('tandem:render', mark + ':parsed', mark + ':rendered');
      el.dispatchEvent(new CustomEvent('tandem:rendered', { bubbles: true, detail: served }));
    }).catch(function (error) {
      clearTimeout(timer);
      // A slow or failed call renders nothing and never breaks the page.
      clear(el);
      el.setAttribute('data-tandem-state', 'error');
      warnOnce((error && error.name === 'AbortError' ? 'recommendations timed out' : String(error && error.message || error)));
    });
  }

  function refresh(root) {
    var els = root && root.matches && root.matches('[data-tandem]') ? [root] : (root || document).querySelectorAll('[data-tandem]');
    return Promise.all(Array.prototype.map.call(els, load));
  }

  function style() {
    if (opts.style === 'none' || document.getElementById('tandem-style')) return;
    var css = document.createElement('style');
    css.id = 'tandem-style';
    // :where() keeps every rule at zero specificity: any rule of the shop's wins.
    css.textContent = [
      ':where([data-tandem]){font:var(--tandem-font,inherit);color:var(--tandem-text,#1a1a1a)}',
      ':where(.tandem-heading){font-size:var(--tandem-heading-size,1.25rem);margin:0 0 var(--tandem-gap,1rem)}',
      ':where(.tandem-list){display:grid;grid-template-columns:repeat(auto-fill,minmax(var(--tandem-item-width,11rem),1fr));gap:var(--tandem-gap,1rem);list-style:none;margin:0;padding:0}',
      ':where(.tandem-item){display:flex;flex-direction:column;gap:.4rem;padding:var(--tandem-padding,.75rem);background:var(--tandem-background,#fff);border:1px solid var(--tandem-border,#d0d0d0);border-radius:var(--tandem-radius,.5rem)}',
      ':where(.tandem-link){display:flex;flex-direction:column;gap:.4rem;color:var(--tandem-link,#0b4f8a);text-decoration:none;font-weight:600}',
      ':where(a.tandem-link:hover) :where(.tandem-title){text-decoration:underline}',
      ':where(.tandem-image){width:100%;aspect-ratio:1;object-fit:cover;border-radius:calc(var(--tandem-radius,.5rem)/2)}',
      ':where(.tandem-price){margin:0;font-weight:600}',
      ':where(.tandem-reason){margin:0;font-size:.875em;color:var(--tandem-muted,#4a4a4a)}',
      ':where(.tandem-dismiss){margin-top:auto;align-self:flex-start;font:inherit;font-size:.875em;padding:.25rem .6rem;color:var(--tandem-muted,#4a4a4a);background:transparent;border:1px solid var(--tandem-border,#767676);border-radius:.25rem;cursor:pointer}',
      ':where(.tandem-link,.tandem-dismiss,.tandem-heading):focus-visible{outline:3px solid var(--tandem-focus,#1a73e8);outline-offset:2px}'
    ].join('\n');
    document.head.appendChild(css);
  }

  window.Tandem = { refresh: refresh, flush: flush };
  addEventListener('pagehide', function () { flush(true); });
  document.addEventListener('visibilitychange', function () { if (document.visibilityState === 'hidden') flush(true); });
  function start() {
    style();
    refresh();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
