// Waiting on another thread without hanging a suite.

/** Resolves once `cond()` holds, checking every 2 ms; rejects after `ms` (a hang is a failure, not a stuck test). */
export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
