/**
 * The built-in templates: one per flow in the default locale (the fallback),
 * and locale variants named `<flow>_<language>` (e.g. "welcome_de"), tried
 * first for a recipient whose language starts with it. Inserted at start when
 * missing (`on conflict do nothing`): an admin's edits are never overwritten.
 */
import type { StoredVariable } from "./entities.ts";

export interface DefaultTemplate {
  name: string;
  subject: string;
  bodyHtml: string;
  bodyText: string;
  variables: StoredVariable[];
}

const v = (name: string, example: unknown, extra: Partial<StoredVariable> = {}): StoredVariable => ({
  name,
  description: extra.description ?? "",
  required: extra.required ?? false,
  sensitive: extra.sensitive ?? false,
  example,
});

const page = (title: string, inner: string) =>
  `<!doctype html><html><body style="font-family:sans-serif;max-width:600px;margin:auto"><h1>${title}</h1>${inner}<p style="color:#888;font-size:12px">{{shop_name}}</p></body></html>`;

const firstName = v("first_name", "Ada");
const shopName = v("shop_name", "Shop");
const shopUrl = v("shop_url", "http://localhost:3000");
const orderNumber = v("order_number", "ORD-2026-000123", { required: true });
const orderUrl = v("order_url", "http://localhost:3000/orders/0190", {});
const amount = v("amount", "€42.00", { required: true });

const money = `{{#items}}<tr><td>{{name}}</td><td>{{quantity}}</td><td>{{total}}</td></tr>{{/items}}`;

export const defaultTemplates: DefaultTemplate[] = [
  {
    name: "welcome",
    subject: "Welcome to {{shop_name}}, {{first_name}}!",
    bodyHtml: page("Welcome, {{first_name}}!", `<p>Your account is ready. <a href="{{shop_url}}">Start shopping</a>.</p>`),
    bodyText: "Welcome, {{first_name}}!\n\nYour account is ready. Start shopping: {{shop_url}}\n\n{{shop_name}}",
    variables: [firstName, shopName, shopUrl],
  },
  {
    name: "welcome_de",
    subject: "Willkommen bei {{shop_name}}, {{first_name}}!",
    bodyHtml: page("Willkommen, {{first_name}}!", `<p>Ihr Konto ist bereit. <a href="{{shop_url}}">Jetzt einkaufen</a>.</p>`),
    bodyText: "Willkommen, {{first_name}}!\n\nIhr Konto ist bereit: {{shop_url}}\n\n{{shop_name}}",
    variables: [firstName, shopName, shopUrl],
  },
  {
    name: "email_verification",
    subject: "Confirm your email address",
    bodyHtml: page("Confirm your email, {{first_name}}", `<p><a href="{{verification_url}}">Confirm my email address</a></p><p>The link works until {{expires_at}}.</p>`),
    bodyText: "Hello {{first_name}},\n\nconfirm your email address: {{verification_url}}\n\nThe link works until {{expires_at}}.\n\n{{shop_name}}",
    variables: [firstName, shopName, v("verification_url", "http://localhost:3000/verify-email?token=sample", { required: true, sensitive: true }), v("expires_at", "2026-01-01 12:00 UTC")],
  },
  {
    name: "email_verification_de",
    subject: "Bestätigen Sie Ihre E-Mail-Adresse",
    bodyHtml: page("Hallo {{first_name}}", `<p><a href="{{verification_url}}">E-Mail-Adresse bestätigen</a></p><p>Der Link gilt bis {{expires_at}}.</p>`),
    bodyText: "Hallo {{first_name}},\n\nbitte bestätigen Sie Ihre E-Mail-Adresse: {{verification_url}}\n\nDer Link gilt bis {{expires_at}}.\n\n{{shop_name}}",
    variables: [firstName, shopName, v("verification_url", "http://localhost:3000/verify-email?token=sample", { required: true, sensitive: true }), v("expires_at", "2026-01-01 12:00 UTC")],
  },
  {
    name: "email_verified",
    subject: "Your email address is confirmed",
    bodyHtml: page("Thank you, {{first_name}}", `<p>Your email address is confirmed. <a href="{{shop_url}}">Back to the shop</a></p>`),
    bodyText: "Thank you, {{first_name}}: your email address is confirmed.\n\n{{shop_url}}",
    variables: [firstName, shopName, shopUrl],
  },
  {
    name: "password_reset",
    subject: "Reset your password",
    bodyHtml: page("Reset your password", `<p>Hello {{first_name}}, <a href="{{reset_url}}">choose a new password</a>.</p><p>The link works until {{expires_at}}. If you did not ask for it, ignore this email.</p>`),
    bodyText: "Hello {{first_name}},\n\nchoose a new password: {{reset_url}}\n\nThe link works until {{expires_at}}. If you did not ask for it, ignore this email.",
    variables: [firstName, shopName, v("reset_url", "http://localhost:3000/reset-password?token=sample", { required: true, sensitive: true }), v("expires_at", "2026-01-01 12:00 UTC")],
  },
  {
    name: "password_reset_de",
    subject: "Passwort zurücksetzen",
    bodyHtml: page("Passwort zurücksetzen", `<p>Hallo {{first_name}}, <a href="{{reset_url}}">neues Passwort wählen</a>.</p><p>Der Link gilt bis {{expires_at}}.</p>`),
    bodyText: "Hallo {{first_name}},\n\nneues Passwort wählen: {{reset_url}}\n\nDer Link gilt bis {{expires_at}}.",
    variables: [firstName, shopName, v("reset_url", "http://localhost:3000/reset-password?token=sample", { required: true, sensitive: true }), v("expires_at", "2026-01-01 12:00 UTC")],
  },
  {
    name: "password_changed",
    subject: "Your password was changed",
    bodyHtml: page("Your password was changed", `<p>Hello {{first_name}}, your password was just changed. If it was not you, <a href="{{reset_request_url}}">reset it now</a>.</p>`),
    bodyText: "Hello {{first_name}},\n\nyour password was just changed. If it was not you, reset it now: {{reset_request_url}}",
    variables: [firstName, shopName, v("reset_request_url", "http://localhost:3000/forgot-password")],
  },
  {
    name: "order_confirmation",
    subject: "Your order {{order_number}}",
    bodyHtml: page(
      "Thank you for your order, {{first_name}}",
      `<p>Order <a href="{{order_url}}">{{order_number}}</a></p><table>${money}</table><p>Subtotal {{subtotal}}{{#discount}}<br>Discount −{{discount}}{{/discount}}<br>Shipping {{shipping}}<br>Tax {{tax}}<br><b>Total {{total}}</b></p>`,
    ),
    bodyText:
      "Thank you for your order, {{first_name}}.\n\nOrder {{order_number}}: {{order_url}}\n{{#items}}- {{quantity}} × {{name}}: {{total}}\n{{/items}}\nSubtotal {{subtotal}}\n{{#discount}}Discount -{{discount}}\n{{/discount}}Shipping {{shipping}}\nTax {{tax}}\nTotal {{total}}",
    variables: [
      firstName,
      shopName,
      orderNumber,
      orderUrl,
      v("items", [{ name: "Blue mug", quantity: 2, total: "€20.00" }]),
      v("subtotal", "€20.00"),
      v("discount", ""),
      v("shipping", "€4.90"),
      v("tax", "€3.80"),
      v("total", "€24.90"),
    ],
  },
  {
    name: "order_shipped",
    subject: "Your order {{order_number}} is on its way",
    bodyHtml: page("On its way", `<p>A parcel of order {{order_number}} left with {{carrier}}.</p>{{#tracking_url}}<p><a href="{{tracking_url}}">Track {{tracking_number}}</a></p>{{/tracking_url}}`),
    bodyText: "A parcel of order {{order_number}} left with {{carrier}}.\nTracking number: {{tracking_number}}\n{{tracking_url}}",
    variables: [firstName, shopName, orderNumber, v("carrier", "DHL"), v("tracking_number", "JD0123"), v("tracking_url", "https://track.example/JD0123")],
  },
  {
    name: "order_delivered",
    subject: "Your order {{order_number}} was delivered",
    bodyHtml: page("Delivered", `<p>Order <a href="{{order_url}}">{{order_number}}</a> was delivered. Enjoy!</p>`),
    bodyText: "Order {{order_number}} was delivered. Enjoy!\n{{order_url}}",
    variables: [firstName, shopName, orderNumber, orderUrl],
  },
  {
    name: "order_cancelled",
    subject: "Your order {{order_number}} was cancelled",
    bodyHtml: page("Order cancelled", `<p>Order {{order_number}} was cancelled.{{#reason}} Reason: {{reason}}.{{/reason}}</p>`),
    bodyText: "Order {{order_number}} was cancelled.{{#reason}} Reason: {{reason}}.{{/reason}}",
    variables: [firstName, shopName, orderNumber, v("reason", "")],
  },
  {
    name: "payment_receipt",
    subject: "Receipt for {{order_number}}",
    bodyHtml: page("Payment received", `<p>We received {{amount}} for order {{order_number}}.</p>`),
    bodyText: "We received {{amount}} for order {{order_number}}.",
    variables: [firstName, shopName, orderNumber, amount],
  },
  {
    name: "payment_failed",
    subject: "Payment for {{order_number}} failed",
    bodyHtml: page("Payment failed", `<p>Your payment of {{amount}} for order {{order_number}} did not go through.{{#reason}} ({{reason}}){{/reason}}</p>`),
    bodyText: "Your payment of {{amount}} for order {{order_number}} did not go through.{{#reason}} ({{reason}}){{/reason}}",
    variables: [firstName, shopName, orderNumber, amount, v("reason", "")],
  },
  {
    name: "refund_issued",
    subject: "Refund of {{amount}} for {{order_number}}",
    bodyHtml: page("Refund issued", `<p>We refunded {{amount}} ({{#full}}the full amount{{/full}}{{^full}}part of your payment{{/full}}) for order {{order_number}}.</p>`),
    bodyText: "We refunded {{amount}} ({{#full}}the full amount{{/full}}{{^full}}part of your payment{{/full}}) for order {{order_number}}.",
    variables: [firstName, shopName, orderNumber, amount, v("full", true)],
  },
  {
    name: "shipment_exception",
    subject: "A problem with your parcel {{tracking_number}}",
    bodyHtml: page("Delivery problem", `<p>Your parcel {{tracking_number}} has a problem: {{description}}</p>`),
    bodyText: "Your parcel {{tracking_number}} has a problem: {{description}}",
    variables: [firstName, shopName, v("tracking_number", "JD0123"), v("description", "address not found")],
  },
  ...returnTemplates(),
  {
    name: "abandoned_cart",
    subject: "You left something in your cart, {{first_name}}",
    bodyHtml: page("Still thinking it over?", `<table>{{#items}}<tr><td>{{name}}</td><td>{{quantity}}</td><td>{{total}}</td></tr>{{/items}}</table><p>Total {{total}}</p><p><a href="{{cart_url}}">Back to your cart</a></p>`),
    bodyText: "Still thinking it over?\n{{#items}}- {{quantity}} × {{name}}: {{total}}\n{{/items}}Total {{total}}\n{{cart_url}}",
    variables: [firstName, shopName, v("items", [{ name: "Blue mug", quantity: 1, total: "€10.00" }]), v("total", "€10.00"), v("cart_url", "http://localhost:3000/cart")],
  },
];

/** The six steps of a return, one template each (type RETURNS). */
function returnTemplates(): DefaultTemplate[] {
  const rma = v("rma_number", "RMA-2026-000042", { required: true });
  const steps: [string, string, string][] = [
    ["return_requested", "We received your return request {{rma_number}}", "We received your return request {{rma_number}}. We will tell you when it is approved."],
    ["return_approved", "Your return {{rma_number}} is approved", "Your return {{rma_number}} is approved.{{#refund}} Expected refund: {{refund}}.{{/refund}} Please send the items back."],
    ["return_rejected", "Your return {{rma_number}} was not approved", "Your return {{rma_number}} was not approved.{{#reason}} Reason: {{reason}}.{{/reason}}"],
    ["return_received", "We received the items of return {{rma_number}}", "We received the items of return {{rma_number}}."],
    ["return_refunded", "Refund of {{amount}} for return {{rma_number}}", "We refunded {{amount}} for return {{rma_number}}."],
    ["return_cancelled", "Your return {{rma_number}} was cancelled", "Your return {{rma_number}} was cancelled."],
  ];
  return steps.map(([name, subject, text]) => ({
    name,
    subject,
    bodyHtml: page(subject, `<p>${text}</p>`),
    bodyText: text,
    variables: [firstName, shopName, rma, v("refund", "€20.00"), v("reason", ""), v("amount", "€20.00")],
  }));
}

/** Names a built-in flow renders (DeleteEmailTemplate refuses them). */
export const builtinNames = new Set(defaultTemplates.map((t) => t.name));
