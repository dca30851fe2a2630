/**
 * When each part of a wishlist item's product snapshot was true at the
 * catalog: product events arrive on separate consumers and may be redelivered
 * late, so an event only overwrites a snapshot older than itself. Catalog
 * fields (name, image, price, availability) and the stock flag keep separate
 * times because stock events carry only the stock. Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

export class WishlistSnapshotTimes extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table user_wishlist_items
      -- The catalog's time of the name, image, price and availability held (products.updated_at or the event's occurred_at).
      add column snapshot_at timestamptz,
      -- The catalog's time of in_stock.
      add column stock_at timestamptz`);
  }
}
