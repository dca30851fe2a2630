/**
 * order_shipments: the parcels of an order as Shipping announced them
 * (shipment.created, shipment.delivered), with the order lines each carries,
 * so that an order shipped in several parcels is DELIVERED only when every
 * unit has been shipped and every parcel delivered. Committed: never edit.
 */
import { Migration } from "@mikro-orm/migrations";

export class OrderShipments extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table order_shipments (
      shipment_id uuid primary key,
      order_id uuid not null references orders (id),
      -- [{"order_item_id": uuid, "quantity": int}], as in shipment.created
      items jsonb not null,
      created_at timestamptz not null default now(),
      delivered_at timestamptz
    )`);
    this.addSql("create index order_shipments_order on order_shipments (order_id)");
  }
}
