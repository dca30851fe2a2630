/**
 * The ten services of the mesh with their default ports and databases
 * (ARCHITECTURE.md). Config, the edge, `npm start` and the docs read this one table.
 */
export const serviceCatalog = {
  auth: { port: 50051, database: "auth_db", protoPackage: "ecommerce.auth.v1" },
  user: { port: 50052, database: "user_db", protoPackage: "ecommerce.user.v1" },
  product: { port: 50053, database: "product_db", protoPackage: "ecommerce.product.v1" },
  order: { port: 50054, database: "order_db", protoPackage: "ecommerce.order.v1" },
  payment: { port: 50055, database: "payment_db", protoPackage: "ecommerce.payment.v1" },
  notification: { port: 50056, database: "notification_db", protoPackage: "ecommerce.notification.v1" },
  cart: { port: 50057, database: "cart_db", protoPackage: "ecommerce.cart.v1" },
  discount: { port: 50058, database: "discount_db", protoPackage: "ecommerce.discount.v1" },
  shipping: { port: 50059, database: "shipping_db", protoPackage: "ecommerce.shipping.v1" },
  returns: { port: 50060, database: "return_db", protoPackage: "ecommerce.returns.v1" },
} as const;

export type ServiceName = keyof typeof serviceCatalog;

export const serviceNames = Object.keys(serviceCatalog) as ServiceName[];

/** The edge's default port. */
export const edgePort = 8080;

/** Env variable holding a peer's base URL, e.g. PRODUCT_SERVICE_URL. */
export function peerUrlVariable(name: ServiceName): string {
  return `${name.toUpperCase()}_SERVICE_URL`;
}
