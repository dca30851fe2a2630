/**
 * customer_orders: the customers who have placed an order, as order.created
 * announced them (consumers.ts), so ValidateCoupon can check a first-order
 * rule for a signed-in customer (cart.proto's ApplyCoupon: "checked now for a
 * signed-in user"). One row per customer, the first order seen. Committed:
 * never edit.
 */
import { Migration } from "@mikro-orm/migrations";

export class CustomerOrders extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create table customer_orders (
      user_id uuid primary key,
      first_order_id uuid not null,
      created_at timestamptz not null default now()
    )`);
  }
}
