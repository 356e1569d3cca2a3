// Tandem explorer: item search (GET /items, admin token unless explore.open), a cart, and the
// lists GET /recommendations gives it with explain=true, one or two side by side (touchpoints
// or experiment variants; forcing a variant needs the admin token). The token stays in this
// tab's sessionStorage and is sent only as an Authorization header to this server.
(function () {
  'use strict';
  var TOKEN_KEY = 'tandem.adminToken';
  var SIGNALS = ['collaborative', 'content', 'session', 'purchased', 'popularity', 'boost'];
  var cart = [];
  var $ = function (id) { return document.getElementById(id); };

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function headers(withToken) {
    var h = {};
    if (withToken && token()) h.Authorization = 'Bearer ' + token();
    return h;
  }

  function call(url, withToken) {
    return fetch(url, { headers: headers(withToken), credentials: 'omit' }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) {
          var message = body && body.error ? body.error.message + ' (' + body.error.code + ')' : 'HTTP ' + r.status;
          throw new Error(message);
        }
        return body;
      });
    });
  }

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) e.className = className;
    if (text != null) e.textContent = text;
    return e;
  }

  function showTokenState() {
    $('token-state').textContent = token() ? 'A token is set for this tab.' : 'No token set: the item search needs one unless the explorer is open.';
  }

  function loadModel() {
    return call('/model', false).then(function (model) {
      $('model-line').textContent = 'Serving model version ' + model.version + ' (' + model.stats.items.toLocaleString() + ' items)';
      var dl = $('model-stats');
      dl.textContent = '';
      Object.keys(model.stats).forEach(function (key) {
        dl.appendChild(el('dt', null, key.replace(/_/g, ' ')));
        var v = model.stats[key];
        dl.appendChild(el('dd', null, typeof v === 'number' ? v.toLocaleString() : JSON.stringify(v)));
      });
      var touchpoints = model.touchpoints || {};
      var names = ['checkout', 'cart', 'product'].filter(function (n) { return touchpoints[n]; });
      if (names.length) {
        var fields = Object.keys(touchpoints[names[0]]);
        var head = document.querySelector('#touchpoints thead tr');
        fields.forEach(function (f) {
          var th = el('th', null, f.replace(/_/g, ' '));
          th.scope = 'col';
          head.appendChild(th);
        });
        var body = document.querySelector('#touchpoints tbody');
        names.forEach(function (name) {
          var tr = el('tr');
          var th = el('th', null, name);
          th.scope = 'row';
          tr.appendChild(th);
          fields.forEach(function (f) {
            var v = touchpoints[name][f];
            tr.appendChild(el('td', 'num', typeof v === 'number' ? v.toFixed(3) : String(v)));
          });
          body.appendChild(tr);
        });
      }
      (model.variants || []).forEach(function (label) {
        Array.prototype.forEach.call(document.querySelectorAll('select.variant'), function (select) {
          var option = el('option', null, label);
          option.value = label;
          select.appendChild(option);
        });
      });
    }).catch(function (e) {
      $('model-line').textContent = 'No model: ' + e.message;
    });
  }

  function renderCart() {
    var ul = $('cart');
    ul.textContent = '';
    cart.forEach(function (item, n) {
      var li = el('li');
      li.appendChild(el('span', null, item.title + ' (' + item.item_id + ')'));
      var remove = el('button', 'secondary', 'Remove');
      remove.type = 'button';
      remove.setAttribute('aria-label', 'Remove ' + item.title + ' from the cart');
      remove.addEventListener('click', function () { cart.splice(n, 1); renderCart(); });
      li.appendChild(remove);
      ul.appendChild(li);
    });
    $('cart-empty').hidden = cart.length > 0;
  }

  function addToCart(item) {
    if (!cart.some(function (c) { return c.item_id === item.item_id; })) cart.push(item);
    renderCart();
  }

  function search(event) {
    event.preventDefault();
    var q = $('search').value.trim();
    if (!q) return;
    $('search-state').textContent = 'Searching…';
    call('/items?q=' + encodeURIComponent(q) + '&limit=20', true).then(function (body) {
      var ul = $('search-results');
      ul.textContent = '';
      $('search-state').textContent = body.items.length + ' found';
      body.items.forEach(function (item) {
        var li = el('li');
        var label = item.title + ' (' + item.item_id + ')' + (item.in_stock ? '' : ', out of stock');
        li.appendChild(el('span', null, label));
        var add = el('button', null, 'Add to cart');
        add.type = 'button';
        add.setAttribute('aria-label', 'Add ' + item.title + ' to the cart');
        add.addEventListener('click', function () { addToCart(item); });
        li.appendChild(add);
        ul.appendChild(li);
      });
    }).catch(function (e) {
      $('search-state').textContent = 'Search failed: ' + e.message;
    });
  }

  function listUrl(touchpoint, variant) {
    var k = Math.min(50, Math.max(1, parseInt($('k').value, 10) || 6));
    var ids = cart.map(function (c) { return c.item_id; }).join(',');
    var url = '/recommendations?explain=true&personalize=false&k=' + k + '&touchpoint=' + touchpoint + '&cart=' + encodeURIComponent(ids);
    if (variant) url += '&variant=' + encodeURIComponent(variant);
    return url;
  }

  function renderList(served, caption) {
    var box = el('section', 'list');
    box.setAttribute('aria-label', caption);
    box.appendChild(el('h3', null, caption));
    box.appendChild(el('p', 'muted', 'variant ' + served.variant + ', model ' + served.model_version + ', request ' + served.request_id));
    if (!served.items.length) box.appendChild(el('p', 'muted', 'Nothing qualified for this cart.'));
    var ol = el('ol');
    var top = 0;
    served.items.forEach(function (item) {
      SIGNALS.forEach(function (s) { top = Math.max(top, (item.contributions || {})[s] || 0); });
    });
    served.items.forEach(function (item) {
      var li = el('li');
      li.setAttribute('data-item-id', item.item_id);
      li.appendChild(el('div', 'item-title', item.title + ' (' + item.item_id + ')'));
      li.appendChild(el('p', 'reason', item.reason.text + ' · score ' + item.score.toFixed(3)));
      var c = item.contributions || {};
      var dl = el('dl', 'signals');
      dl.setAttribute('aria-label', 'Signal contributions to ' + item.title);
      SIGNALS.forEach(function (s) {
        var value = c[s] || 0;
        dl.appendChild(el('dt', null, s));
        var track = el('dd', 'track');
        track.setAttribute('aria-hidden', 'true');
        var bar = el('div', 'bar');
        bar.setAttribute('data-signal', s);
        // CSSOM, not a style attribute: the page's CSP allows no inline styles.
        bar.style.width = (top > 0 ? Math.max(0, value) / top * 100 : 0).toFixed(1) + '%';
        track.appendChild(bar);
        dl.appendChild(track);
        dl.appendChild(el('dd', 'num', value.toFixed(3)));
      });
      li.appendChild(dl);
      var flags = [];
      if (c.substitute) flags.push('demoted as a substitute of a cart item');
      if (c.near_dismissed) flags.push('demoted as close to a dismissed item');
      if (flags.length) li.appendChild(el('p', 'flags', flags.join('; ')));
      ol.appendChild(li);
    });
    box.appendChild(ol);
    return box;
  }

  function showLists(event) {
    event.preventDefault();
    if (!cart.length) {
      $('list-state').textContent = 'Add at least one item to the cart.';
      return;
    }
    var wanted = [{ touchpoint: $('touchpoint-a').value, variant: $('variant-a').value, name: 'A' }];
    if ($('compare').checked) wanted.push({ touchpoint: $('touchpoint-b').value, variant: $('variant-b').value, name: 'B' });
    $('list-state').textContent = 'Loading…';
    Promise.all(wanted.map(function (w) {
      return call(listUrl(w.touchpoint, w.variant), !!w.variant);
    })).then(function (lists) {
      var box = $('lists');
      box.textContent = '';
      lists.forEach(function (served, n) {
        var w = wanted[n];
        box.appendChild(renderList(served, 'List ' + w.name + ': ' + w.touchpoint + (w.variant ? ', ' + w.variant : '')));
      });
      $('list-state').textContent = '';
    }).catch(function (e) {
      $('list-state').textContent = 'Failed: ' + e.message;
    });
  }

  function start() {
    $('token-form').addEventListener('submit', function (event) {
      event.preventDefault();
      try { sessionStorage.setItem(TOKEN_KEY, $('token').value.trim()); } catch (e) { /* storage off: token not kept */ }
      $('token').value = '';
      showTokenState();
    });
    $('forget-token').addEventListener('click', function () {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing kept */ }
      showTokenState();
    });
    $('search-form').addEventListener('submit', search);
    $('list-form').addEventListener('submit', showLists);
    showTokenState();
    renderCart();
    loadModel();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
