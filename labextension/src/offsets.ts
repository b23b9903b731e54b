/**
 * Cursor offsets, converted in one place. The wire to the server (`CompleteRequest.cursor`)
 * counts code points, as Jupyter's messaging protocol and Python strings do, and as
 * JupyterLab's completer hands `request.offset` to providers. JavaScript strings and
 * CodeMirror count UTF-16 units: a character outside the BMP (an emoji, some CJK, math letters)
 * is one code point but two units.
 */

/** UTF-16 units of the character at `index`: 2 for a surrogate pair, else 1. */
function unitsAt(text: string, index: number): number {
  const unit = text.charCodeAt(index);
  return unit >= 0xd800 && unit <= 0xdbff && index + 1 < text.length ? 2 : 1;
}

/** The UTF-16 index in `text` of the position `codePoints` code points from its start. */
export function utf16Index(text: string, codePoints: number): number {
  let index = 0;
  for (let seen = 0; seen < codePoints && index < text.length; seen++) {
    index += unitsAt(text, index);
  }
  return index;
}

/** How many code points come before the UTF-16 index `index` of `text`. */
export function codePointOffset(text: string, index: number): number {
  let codePoints = 0;
  for (let i = 0; i < index && i < text.length; codePoints++) {
    i += unitsAt(text, i);
  }
  return codePoints;
}
