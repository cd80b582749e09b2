/**
 * Raw HTTP/2 frames over TLS, for the attack tests: what no well-behaved client library sends
 * (a stream reset the moment it opens, a header block that never ends, a flood of PINGs). Only
 * the frames those tests need (RFC 9113 §6), and header blocks of HPACK representations that
 * need no table (RFC 7541 §6.1 indexed static entries, §6.2.2 literals without indexing, no
 * Huffman coding).
 */
import tls from 'node:tls';

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const ERROR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, CANCEL: 8, ENHANCE_YOUR_CALM: 11 } as const;

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** One frame: 9-octet head (length, type, flags, stream id) and its payload. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1), the prefix's other bits set to `first`. */
function integer(value: number, prefixBits: number, first: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

function literal(bytes: string): Buffer {
  const raw = Buffer.from(bytes, 'latin1');
  return Buffer.concat([integer(raw.length, 7, 0), raw]);
}

/** A literal field without indexing, with a new name (RFC 7541 §6.2.2). */
export function field(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0]), literal(name), literal(value)]);
}

/**
 * An HPACK bomb's fields: one field added to the dynamic table (RFC 7541 §6.2.1, index 62),
 * then `references` one-byte references to it (§6.1): a few bytes on the wire per
 * `value.length` decoded.
 */
export function bombFields(name: string, value: string, references: number): Buffer {
  return Buffer.concat([Buffer.from([0x40]), literal(name), literal(value), Buffer.alloc(references, 0x80 | 62)]);
}

/** A GET's header block: :method GET, :scheme https (static entries 2 and 7), :path and :authority. */
export function getBlock(path: string, authority: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x82, 0x87]),
    Buffer.concat([integer(4, 4, 0), literal(path)]), // :path, name from static entry 4
    Buffer.concat([integer(1, 4, 0), literal(authority)]), // :authority, static entry 1
  ]);
}

export interface RawSession {
  socket: tls.TLSSocket;
  /** Writes frames; resolves once the socket took them (false: it had closed). */
  send(...frames: Buffer[]): Promise<boolean>;
  /** Frames received so far (type, flags, stream id, payload), in order. */
  readonly received: { type: number; flags: number; streamId: number; payload: Buffer }[];
  /** The GOAWAY error codes received. */
  goaways(): number[];
  /** Resolves when the server has closed the connection. */
  readonly closed: Promise<void>;
  isClosed(): boolean;
}

/** A TLS connection that has negotiated h2 and sent the client preface and an empty SETTINGS. */
export async function rawH2(port: number, ca: string, servername: string): Promise<RawSession> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, servername, ALPNProtocols: ['h2'] });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  if (socket.alpnProtocol !== 'h2') throw new Error(`ALPN gave ${String(socket.alpnProtocol)}, not h2`);
  socket.on('error', () => undefined);
  const received: RawSession['received'] = [];
  let buffered = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 9) {
      const length = buffered.readUIntBE(0, 3);
      if (buffered.length < 9 + length) break;
      received.push({ type: buffered[3]!, flags: buffered[4]!, streamId: buffered.readUInt32BE(5) & 0x7fffffff, payload: buffered.subarray(9, 9 + length) });
      buffered = buffered.subarray(9 + length);
    }
  });
  let isClosed = false;
  const closed = new Promise<void>((resolve) => socket.once('close', () => ((isClosed = true), resolve())));
  const send = (...frames: Buffer[]) =>
    new Promise<boolean>((resolve) => {
      if (isClosed || socket.destroyed) return resolve(false);
      socket.write(Buffer.concat(frames), (err) => resolve(!err));
    });
  await send(PREFACE, frame(FRAME.SETTINGS, 0, 0));
  return {
    socket,
    send,
    received,
    goaways: () => received.filter((f) => f.type === FRAME.GOAWAY).map((f) => f.payload.readUInt32BE(4)),
    closed,
    isClosed: () => isClosed,
  };
}
