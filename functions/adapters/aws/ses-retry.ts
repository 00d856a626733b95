/**
 * The SDK's retries for our SES clients, but for SES's daily quota. SES answers its daily sending
 * quota as throttling ("Daily message quota exceeded", sesSendingLimit), which the SDK retries with
 * backoff as it retries the sending rate: two more SendEmail calls and ~3 s before `POST …/send`
 * answers `429 send_quota_exceeded`, five more SendBounce calls and longer for a bounce. The quota
 * counts the last 24 hours: no retry within seconds can pass it. Every other error is retried as the
 * SDK's own strategy decides (the same class the SDK builds from `retryMode` and `maxAttempts`).
 */
import { AdaptiveRetryStrategy, StandardRetryStrategy } from '@smithy/core/retry';
import type { RetryErrorInfo, RetryStrategyV2, RetryToken } from '@smithy/types';
import { sesSendingLimit } from './ses-errors.ts';

/** `inner`, except that it never retries an error that is SES's daily quota. */
export function withoutDailyQuotaRetries(inner: RetryStrategyV2): RetryStrategyV2 {
  return {
    // What the SDK reports as its retry mode (user agent), as the strategy it wraps.
    ...('mode' in inner ? { mode: inner.mode } : {}),
    acquireInitialRetryToken: (scope: string): Promise<RetryToken> => inner.acquireInitialRetryToken(scope),
    refreshRetryTokenForRetry: (token: RetryToken, info: RetryErrorInfo): Promise<RetryToken> => {
      // A rejection here is the SDK's "no more retries": it throws the request's own error.
      if (info.error !== undefined && sesSendingLimit(info.error) === 'daily_quota') {
        return Promise.reject(info.error);
      }
      return inner.refreshRetryTokenForRetry(token, info);
    },
    recordSuccess: (token: RetryToken): void => inner.recordSuccess(token),
  };
}

/**
 * SES client options with the SDK's retry strategy (`standard`, or `adaptive`: slowed down after
 * throttling, for SendBounce's one call a second) and `maxAttempts`, without daily-quota retries.
 * A fresh strategy for each client, as the SDK makes one for each (its retry quota is per client).
 */
export function sesRetryConfig(
  mode: 'standard' | 'adaptive' = 'standard',
  maxAttempts = 3,
): { readonly maxAttempts: number; readonly retryStrategy: RetryStrategyV2 } {
  const inner =
    mode === 'adaptive' ? new AdaptiveRetryStrategy(maxAttempts) : new StandardRetryStrategy(maxAttempts);
  return { maxAttempts, retryStrategy: withoutDailyQuotaRetries(inner) };
}
