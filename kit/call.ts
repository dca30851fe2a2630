/**
 * The one interceptor of every call a service serves: the kit's per-call steps in
 * sequence, in one async layer and one async-context scope (kit/context.ts) instead of a
 * nested interceptor and scope per concern, with what does not change per call looked
 * up once per method. In order:
 * 1. the call's trace (continued from `traceparent`, or new), its deadline and client (`context.ts`),
 *    one scope for all the work it starts; counted as in flight until it answers (shutdown drains it);
 * 2. the access policy of the contract (`auth/interceptor.ts`): the caller in the handler context and the scope;
 * 3. the RPC's rate limits, if it has any (`rate-limit.ts`);
 * 4. a List RPC's page token refused unless this RPC signed it (`paging.ts`; before validation, so
 *    a forgery is refused the same way whatever else the request lacks);
 * 5. protovalidate and the text rules (`validation.ts`), and the lazily forked EntityManager (`db.ts`);
 * then the handler. Failures after the deadline are DEADLINE_EXCEEDED or CANCELLED; every
 * failure is mapped, counted and logged, and every call timed (`observe.ts`).
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type createHandlerContext, type HandlerContext, type Interceptor, type StreamRequest, type StreamResponse, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { accessPolicies, type Authorize } from "./auth/interceptor.ts";
import { callerKey } from "./auth/principal.ts";
import type { TokenVerifier } from "./auth/verifier.ts";
import { afterDeadline, type CallDeadline, callDeadlineOf, runInScope, type Scope, traceFrom } from "./context.ts";
import { attachEntityManager } from "./db.ts";
import type { Logger } from "./logger.ts";
import type { ServiceMetrics } from "./metrics.ts";
import { type MethodObservation, observer } from "./observe.ts";
import { checkPageToken, type PagingScope, pagingScopes } from "./paging.ts";
import { rateLimitChecks, type RateLimits, type RpcRateLimit } from "./rate-limit.ts";
import { validated } from "./validation.ts";

/**
 * The reason a call's signal carries once the call is over. connect 2.2 ends every call by
 * calling its handler context's `abort()` without a reason, twice (the response iterator's
 * return and its final step), and Node's `AbortController.abort()` then builds a DOMException,
 * with its stack, even for a signal already aborted: 13-15 µs each, about 10% of GetMyProfile's
 * server CPU in the profile (more than the bare Connect server pays for the same two, the
 * stacks being deeper). Work still running on the call's signal afterwards sees this instead.
 */
export const callEnded = new ConnectError("the call has ended", Code.Canceled);

/**
 * connect's request gate (kit/server.ts), the one public hook that receives the handler
 * context itself (interceptors and handlers get copies): its `abort()` gets `callEnded`
 * when connect gives no reason. A reason given (the call's error) is passed on as it is.
 */
export function abortWithReason(context: HandlerContext): void {
  // The context connect makes is createHandlerContext's, with abort(); a later connect without it is left alone.
  const controller = context as ReturnType<typeof createHandlerContext>;
  const abort = controller.abort;
  if (typeof abort !== "function") return;
  controller.abort = (reason?: unknown) => abort(reason === undefined ? callEnded : reason);
}

export interface CallOptions {
  log: Logger;
  metrics: ServiceMetrics;
  slowCallMs: number;
  maxTimeoutMs: number;
  verifier: TokenVerifier;
  /** INTERNAL RPCs callable without a service token (Auth's IssueServiceToken). */
  credentialExempt?: string[];
  rateLimits?: { limits: RateLimits<string>; rules: readonly RpcRateLimit[] };
  pageTokenKey: string;
  orm: MikroORM;
  /** Unary calls in flight, which shutdown waits for (streams are ended by the shutdown signal instead). */
  inFlight: { started(): void; ended(): void };
}

/** What the steps need of one method, computed on its first call. */
interface MethodPlan {
  observed: MethodObservation;
  authorize: Authorize | undefined;
  limit: ((req: UnaryRequest | StreamRequest) => Promise<void>) | undefined;
  paging: PagingScope | undefined;
}

export function callInterceptor(options: CallOptions): Interceptor {
  const observe = observer(options.log, options.metrics, { slowCallMs: options.slowCallMs });
  const accessOf = accessPolicies(options.verifier, options.credentialExempt);
  const limitOf = options.rateLimits ? rateLimitChecks(options.rateLimits.limits, options.rateLimits.rules) : () => undefined;
  const pagingOf = pagingScopes(options.pageTokenKey);
  const plans = new WeakMap<DescMethod, MethodPlan>();
  const planOf = (method: DescMethod): MethodPlan => {
    let plan = plans.get(method);
    if (!plan) plans.set(method, (plan = { observed: observe.of(method), authorize: accessOf(method), limit: limitOf(method), paging: pagingOf(method) }));
    return plan;
  };
  const { orm, inFlight, maxTimeoutMs } = options;

  // Steps 2 to 5 and the handler, inside the call's scope.
  async function handle(
    req: UnaryRequest | StreamRequest,
    plan: MethodPlan,
    scope: Scope & { call: CallDeadline },
    next: (req: UnaryRequest | StreamRequest) => Promise<UnaryResponse | StreamResponse>,
  ): Promise<UnaryResponse | StreamResponse> {
    try {
      if (plan.authorize) {
        const caller = await plan.authorize(req);
        req.contextValues.set(callerKey, caller);
        scope.caller = caller;
      }
      if (plan.limit) await plan.limit(req);
      // Paging first: a forged page token is INVALID_PAGE_TOKEN on every paged RPC, not hidden behind other violations.
      if (plan.paging) checkPageToken(plan.paging, req);
      const checked = validated(req);
      attachEntityManager(req.contextValues, orm);
      return await next(checked);
    } catch (error) {
      throw afterDeadline(error, scope.call);
    }
  }

  return (next) => async (req) => {
    const plan = planOf(req.method);
    const unary = plan.observed.unary;
    if (unary) inFlight.started();
    const trace = traceFrom({ traceparent: req.header.get("traceparent"), requestId: req.header.get("x-request-id") });
    const started = performance.now();
    try {
      const scope: Scope & { call: CallDeadline } = { trace, call: callDeadlineOf(req, maxTimeoutMs), caller: undefined, paging: plan.paging };
      const res = await runInScope(scope, () => handle(req, plan, scope, next as never));
      res.header.set("x-request-id", trace.requestId);
      if (!res.stream) {
        observe.succeeded(plan.observed, trace, started);
        return res;
      }
      return observe.stream(plan.observed, trace, started, res, req.signal);
    } catch (error) {
      throw observe.failed(plan.observed, trace, started, error, req.signal);
    } finally {
      if (unary) inFlight.ended();
    }
  };
}
