/**
 * `load` run on the first call and its result shared by every later one; a failed load is not
 * remembered, so the next call tries again. What the lazy ports (LazyBlobStore, LazyOutbound) build
 * their real adapter with.
 */
export function loadOnce<T>(load: () => Promise<T>): () => Promise<T> {
  let loading: Promise<T> | undefined;
  return () => {
    if (loading === undefined) {
      const attempt = load();
      loading = attempt;
      attempt.catch(() => {
        if (loading === attempt) loading = undefined;
      });
    }
    return loading;
  };
}
