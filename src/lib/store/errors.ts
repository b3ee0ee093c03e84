/** Errors of the store engine. Each has a stable `code` so callers never match message text. */

export class StoreError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A db, journal or block that cannot be trusted; names the file and, where known, the revision. */
export class StoreCorruptError extends StoreError {
  constructor(message: string) {
    super('ECORRUPT', message);
  }
}

/** Another live process holds the directory. */
export class StoreLockedError extends StoreError {
  constructor(message: string) {
    super('ELOCKED', message);
  }
}

/** An object over the format's limit (2 GiB - 1 bytes). */
export class ObjectTooLargeError extends StoreError {
  constructor(size: number, limit: number) {
    super('ETOOLARGE', `object of ${size} bytes is larger than the limit of ${limit} bytes`);
  }
}

/** The body ended before, or ran past, the size announced for it. */
export class BodySizeMismatchError extends StoreError {
  readonly expected: number;
  readonly received: number;
  constructor(expected: number, received: number) {
    super('ESIZE', `body has ${received} bytes, ${expected} were announced`);
    this.expected = expected;
    this.received = received;
  }
}

/** The MD5 the client announced does not match the body. */
export class DigestMismatchError extends StoreError {
  constructor() {
    super('EDIGEST', 'the MD5 of the body does not match the one announced');
  }
}

/** An operation on a store that was opened read-only, or that is closed. */
export class StoreStateError extends StoreError {
  constructor(message: string) {
    super('ESTATE', message);
  }
}
