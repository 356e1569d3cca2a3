-- Variants of one product (sizes, colours: stock codes 85099B and 85099C) share a product
-- group. The guard rails never recommend a variant of a cart item, and training never counts
-- variants as each other's complements. Merchandising flags (promoted, margin) live in
-- `attributes`.
ALTER TABLE items ADD COLUMN product_group text;
