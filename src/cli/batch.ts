// iproute2's batch mode input (lib/utils.c getcmdline and makeargs): `vdpa -batch FILE`.

/** One command of a batch file. */
export interface BatchCommand {
  /** Line the command ends on (iproute2's cmdlineno), for "Command failed FILE:LINE". */
  line: number;
  /** The words, or null if the line could not be split (see `error`). */
  argv: string[] | null;
  /** Why the line could not be split, as iproute2 prints it (newline included). */
  error?: string;
}

/**
 * Splits a batch file into commands as iproute2's getcmdline + makeargs do: `#` starts a
 * comment, a trailing backslash continues the line, words split on blanks, '…' and "…" quote.
 * Each command carries the number of the line it ends on (cmdlineno); blank ones are dropped.
 */
export function parseBatch(text: string): BatchCommand[] {
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const cmds: BatchCommand[] = [];
  let no = 0;
  while (no < lines.length) {
    let line = lines[no++]!;
    let hash = line.indexOf('#');
    if (hash >= 0) line = line.slice(0, hash);
    while (line.endsWith('\\') && no < lines.length) {
      let next = lines[no++]!;
      hash = next.indexOf('#');
      if (hash >= 0) next = next.slice(0, hash);
      line = line.slice(0, -1) + next;
    }
    const r = makeArgs(line);
    if (typeof r === 'string') cmds.push({ line: no, argv: null, error: r });
    else if (r.length) cmds.push({ line: no, argv: r });
  }
  return cmds;
}

function makeArgs(line: string): string[] | string {
  const argv: string[] = [];
  const ws = ' \t\r\n';
  let i = 0;
  while (i < line.length) {
    while (i < line.length && ws.includes(line[i]!)) i++;
    if (i >= line.length) break;
    const c = line[i]!;
    if (c === '"' || c === "'") {
      const end = line.indexOf(c, i + 1);
      if (end < 0) return 'Unterminated quoted string\n';
      argv.push(line.slice(i + 1, end));
      i = end + 1;
    } else {
      let j = i;
      while (j < line.length && !ws.includes(line[j]!)) j++;
      argv.push(line.slice(i, j));
      i = j + 1;
    }
  }
  return argv;
}
