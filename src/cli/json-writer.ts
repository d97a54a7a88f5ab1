// iproute2's lib/json_writer.c: the JSON layout every iproute2 tool prints with -j / -j -p.

/** A JSON value; objects keep their key order. */
export type JsonValue = string | number | bigint | boolean | JsonValue[] | { [key: string]: JsonValue };

/**
 * Serializes as iproute2's json_writer does: compact (`{"a":[1,2]}`), or with pretty = true
 * objects indented by 4 spaces per level, `"key": value`, and arrays on one line as `[ 1,2 ]`.
 * No trailing newline (jsonw_destroy adds it).
 */
export function formatJson(v: JsonValue, pretty = false, depth = 0): string {
  const eol = (d: number) => (pretty ? '\n' + '    '.repeat(d) : '');
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'bigint') return v.toString();
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) {
    const items = v.map((x) => formatJson(x, pretty, depth + 1));
    if (!pretty) return `[${items.join(',')}]`;
    return `[ ${items.join(',')}${items.length ? ' ' : ''}]`;
  }
  const entries = Object.entries(v);
  if (entries.length === 0) return '{}';
  const body = entries.map(([k, x]) => `${eol(depth + 1)}${JSON.stringify(k)}:${pretty ? ' ' : ''}${formatJson(x, pretty, depth + 1)}`);
  return `{${body.join(',')}${eol(depth)}}`;
}
