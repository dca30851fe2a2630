/**
 * The least every service offers and the events the mesh carries, as fixed by
 * ../shared/ARCHITECTURE.md. The contract test checks proto/ covers all of it.
 */

/** Required RPCs per package (a package may split them over several services). */
export const requiredRpcs: Record<string, string[]> = {
  "ecommerce.auth.v1": [
    "Register", "Login", "RefreshToken", "Logout", "VerifyEmail", "ResendVerification",
    "RequestPasswordReset", "ResetPassword", "ChangePassword", "GetJwks",
    "ListUsers", "SetUserActive", "AssignRole", "RevokeRole", "ListSecurityAuditLogs", "IssueServiceToken",
  ],
  "ecommerce.user.v1": [
    "GetMyProfile", "UpdateMyProfile", "AddAddress", "UpdateAddress", "DeleteAddress", "ListAddresses",
    "SetDefaultAddress", "AddPaymentMethod", "DeletePaymentMethod", "ListPaymentMethods",
    "GetPreferences", "SetPreferences", "AddToWishlist", "RemoveFromWishlist", "ListWishlist",
    "GetProfile", "ListProfiles",
  ],
  "ecommerce.product.v1": [
    "CreateProduct", "UpdateProduct", "ArchiveProduct", "GetProduct", "ListProducts", "SearchProducts",
    "CreateCategory", "UpdateCategory", "MoveCategory", "DeleteCategory", "GetCategory",
    "CreateVariant", "UpdateVariant", "DeleteVariant", "AddImage", "DeleteImage", "SetProductTags",
    "GetStock", "AdjustStock", "ReserveStock", "ReleaseReservation", "CommitReservation",
    "CreateReview", "ListReviews", "ModerateReview", "MarkReviewHelpful",
  ],
  "ecommerce.cart.v1": [
    "GetCart", "AddItem", "UpdateItemQuantity", "RemoveItem", "ClearCart", "MergeGuestCart", "ApplyCoupon", "RemoveCoupon",
  ],
  "ecommerce.discount.v1": [
    "CreatePromotion", "UpdatePromotion", "ListPromotions", "CreateCoupon", "UpdateCoupon", "ListCoupons",
    "ValidateCoupon", "CalculateDiscounts", "RedeemDiscounts", "ReleaseRedemption",
  ],
  "ecommerce.order.v1": [
    "PlaceOrder", "GetOrder", "ListMyOrders", "CancelOrder", "WatchOrder", "ListOrders", "UpdateOrderStatus", "AddOrderNote",
  ],
  "ecommerce.payment.v1": [
    "AuthorizePayment", "CapturePayment", "VoidPayment", "GetPayment", "ListPaymentsForOrder", "RefundPayment",
  ],
  "ecommerce.notification.v1": [
    "ListMyNotifications", "MarkRead", "GetNotificationPreferences", "UpdateNotificationPreferences",
    "CreateEmailTemplate", "UpdateEmailTemplate", "GetEmailTemplate", "ListEmailTemplates", "ListNotificationLogs", "SendNotification",
  ],
  "ecommerce.shipping.v1": [
    "ListCarriers", "GetShippingRates", "CreateShipment", "AddTrackingEvent", "GetShipment", "TrackShipment", "ListShipmentsForOrder",
  ],
  "ecommerce.returns.v1": [
    "CreateReturnRequest", "GetReturn", "ListMyReturns", "CancelReturn", "ListReturnReasons",
    "ApproveReturn", "RejectReturn", "MarkReceived", "ProcessRefund",
  ],
};

/** Server-streaming RPCs. */
export const serverStreams = ["ecommerce.order.v1.OrderService.WatchOrder"];

/** Event subjects named in ARCHITECTURE.md (more may exist). */
export const requiredSubjects = [
  "user.registered", "user.email_verified", "user.password_reset_requested", "user.updated", "user.deleted",
  "product.created", "product.updated", "product.out_of_stock",
  "order.created", "order.confirmed", "order.shipped", "order.delivered", "order.cancelled",
  "payment.initiated", "payment.succeeded", "payment.failed", "payment.refunded",
  "shipment.created", "shipment.delivered",
  "return.requested", "return.approved", "return.refunded",
];

/** RPC name prefixes that only read, and so must be NO_SIDE_EFFECTS. */
export const readOnlyPrefixes = ["Get", "List", "Search", "Track", "Suggest"];
