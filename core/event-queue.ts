/**
 * A push-based async iterable: producers `push` without waiting, each consumer pulls at its own
 * pace. Used for a run's typed event stream.
 *
 * Written here rather than taken from @repeaterjs/repeater (which the API's event bus uses): a
 * Repeater is lazy, its executor starts at the first `next()`, while a run starts at once and its
 * events must be kept from the first one for a consumer that begins iterating later.
 */
export class EventQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: ((r: IteratorResult<T>) => void) | null = null;
  private closed = false;
  private failure: unknown = null;

  push(item: T): void {
    if (this.closed) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w({ value: item, done: false });
    } else this.items.push(item);
  }

  close(error?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    if (error !== undefined) this.failure = error;
    if (this.waiting && this.items.length === 0) {
      const w = this.waiting;
      this.waiting = null;
      if (this.failure !== null) w(Promise.reject(this.failure) as never);
      else w({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.items.length > 0) return Promise.resolve({ value: this.items.shift()!, done: false });
        if (this.closed) return this.failure !== null ? Promise.reject(this.failure) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => {
          this.waiting = (r) => (r instanceof Promise ? r.then(resolve, reject) : resolve(r));
        });
      },
      return: () => {
        this.items.length = 0;
        this.closed = true;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
