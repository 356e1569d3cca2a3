-- Tandem schema: the shop's catalogue and order history, versioned model tables, and events.
-- Model tables carry no foreign keys to `items`: a version is bulk-written with COPY and
-- validated as a whole when it is loaded, and catalogue rows may come and go between versions.

CREATE TABLE items (
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    title       text NOT NULL DEFAULT '',
    category    text,
    brand       text,
    price       real CHECK (price IS NULL OR price >= 0),
    in_stock    boolean NOT NULL DEFAULT true,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id           text PRIMARY KEY,
    customer_id  text,
    ordered_at   timestamptz NOT NULL,
    country      text,
    cancelled    boolean NOT NULL DEFAULT false
);
CREATE INDEX orders_ordered_at_idx ON orders (ordered_at);

CREATE TABLE order_lines (
    order_id    text NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no     integer NOT NULL,
    item_id     text NOT NULL REFERENCES items (id),
    quantity    integer NOT NULL,
    unit_price  real,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_lines_item_id_idx ON order_lines (item_id);

CREATE TABLE model_versions (
    version        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    ready_at       timestamptz,
    status         text NOT NULL DEFAULT 'building'
                   CHECK (status IN ('building', 'ready', 'failed', 'retired')),
    embedding_dim  integer NOT NULL DEFAULT 0 CHECK (embedding_dim >= 0),
    params         jsonb NOT NULL DEFAULT '{}'::jsonb,
    stats          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX model_versions_ready_idx ON model_versions (version DESC) WHERE status = 'ready';

-- The item universe of a version: every item the model knows, with its popularity.
CREATE TABLE item_stats (
    version     bigint NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    item_id     text NOT NULL,
    popularity  real NOT NULL,
    baskets     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (version, item_id)
);

-- Top-N co-purchase neighbours per item.
CREATE TABLE co_purchase (
    version        bigint NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    item_id        text NOT NULL,
    other_item_id  text NOT NULL,
    score          real NOT NULL,
    support        integer NOT NULL DEFAULT 0,
    PRIMARY KEY (version, item_id, other_item_id)
);

-- One vector per item as little-endian f32 bytes (embedding_dim * 4 of them): bytea decodes
-- without per-element framing, so a million 64-dimensional rows load several times faster
-- than real[].
CREATE TABLE item_embeddings (
    version    bigint NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    item_id    text NOT NULL,
    embedding  bytea NOT NULL,
    PRIMARY KEY (version, item_id)
);

-- What the storefront told us happened (append-only). Shopper and session ids are stored
-- only as keyed hashes.
CREATE TABLE events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    occurred_at    timestamptz NOT NULL,
    kind           text NOT NULL
                   CHECK (kind IN ('impression', 'click', 'add_to_cart', 'purchase', 'dismiss')),
    request_id     uuid,
    item_id        text NOT NULL,
    shopper        text,
    session        text,
    touchpoint     text,
    variant        text,
    model_version  bigint
);
CREATE INDEX events_occurred_at_idx ON events (occurred_at);
CREATE INDEX events_shopper_idx ON events (shopper) WHERE shopper IS NOT NULL;
CREATE INDEX events_request_id_idx ON events (request_id) WHERE request_id IS NOT NULL;
