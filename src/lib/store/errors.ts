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

/**
 * A file's state on disk is no longer known: an fsync or fdatasync failed (Linux reports a
 * writeback error once, so a retry would "succeed" over lost pages), or a failed write could
 * not be cut back. The store stops taking writes when it sees one.
 */
export class DurabilityError extends StoreError {
  constructor(
    readonly file: string,
    readonly action: string,
    override readonly cause: Error,
  ) {
    const code = (cause as NodeJS.ErrnoException).code;
    super('EDURABILITY', `${action} of ${file} failed (${code ? `${code}: ` : ''}${cause.message.replace(/^[A-Z]+: /, '')})`);
  }
}

/**
 * Runs a sync (or another step whose failure leaves a file's state unknown); its failure is a
 * DurabilityError. A failed open on the way (a directory opened to be synced, with no file
 * descriptor left) leaves nothing unknown and is passed on as it is.
 */
export async function durably(file: string, action: string, step: () => Promise<void>): Promise<void> {
  try {
    await step();
  } catch (err) {
    if (err instanceof DurabilityError || (err as NodeJS.ErrnoException).syscall === 'open') throw err;
    throw new DurabilityError(file, action, err as Error);
  }
}

/** Writes are stopped after a DurabilityError, until a restart recovers from what is on disk. */
export class StoreFailedError extends StoreError {
  constructor(
    dir: string,
    readonly reason: DurabilityError,
  ) {
    super('EFAILED', `${dir}: writes are stopped because ${reason.message}; reads go on, and a restart recovers from what is on disk`);
  }
}

/** Set once, by the first DurabilityError; from then on every write fails with it. */
export class FailureLatch {
  failure: StoreFailedError | undefined;

  constructor(
    private readonly dir: string,
    private readonly onFailure: (failure: StoreFailedError) => void,
  ) {}

  fail(reason: DurabilityError): StoreFailedError {
    if (!this.failure) {
      this.failure = new StoreFailedError(this.dir, reason);
      this.onFailure(this.failure);
    }
    return this.failure;
  }
}

/** A revision the history does not hold. */
export class RevisionOutOfRangeError extends StoreError {
  constructor(dir: string, revision: number, history: { total: number; historyStart: number }) {
    const { total } = history;
    const oldest = Math.max(0, history.historyStart - 1);
    super(
      'ERANGE',
      total === 0
        ? `revision ${revision} is out of range: ${dir} holds no history`
        : oldest > 0
          ? `revision ${revision} is out of range: ${dir} holds revisions ${oldest}..${total - 1} (compaction forgot the ones before ${oldest})`
          : `revision ${revision} is out of range: ${dir} holds revisions 0..${total - 1}`,
    );
  }
}

/** A copy's source version was forgotten by compaction (older than --keep-history) meanwhile. */
export class VersionForgottenError extends StoreError {
  constructor(message: string) {
    super('EFORGOTTEN', message);
  }
}

/** A write made on the condition that the key holds no object (If-None-Match: *) found one. */
export class ObjectExistsError extends StoreError {
  constructor(key: string) {
    super('EEXIST', `${key} exists already`);
  }
}
