/**
 * Gradient2: a latency-gradient concurrency limit after Netflix concurrency-limits' Gradient2Limit
 * and Envoy's adaptive-concurrency filter. It compares the latency the origin shows now with the
 * latency it shows when nobody queues on it, and sizes the limit so the origin is just kept
 * busy: past saturation, requests wait inside the origin and the RTT grows in proportion to the
 * excess concurrency (Little's law: rtt = inflight / throughput once throughput is flat), so the
 * gradient longRtt / shortRtt is the factor that removes the excess.
 *
 * Owns the algorithm only; the Limiter feeds it samples. Units: RTTs in ms, limits in requests.
 *
 * Long-term RTT (`longRttMs`): the origin's RTT with no queueing in it.
 * - A slow EWMA over *no-load samples* only, each clipped to at most 2 x the current value
 *   once a baseline exists (one slow endpoint's sample must not inflate the baseline; a real
 *   change still moves it, by up to 2 x alpha per sample): samples whose in-flight count at start was
 *   <= max(min, limit / 2), the other gateways' (LimitSample.peerInflight) included, i.e. taken
 *   while the origin was clearly not saturated.
 *   alpha = max(2 / (longWindowSamples + 1), 1 / n) for the n-th such sample (bias-corrected,
 *   so the first samples count fully). Samples taken at the limit are kept out: under a
 *   sustained crowd they all carry queueing, the average would drift up with them and ratchet
 *   the limit up without end (Netflix Gradient2's known drift).
 * - Probes (Envoy's minRTT recalculation, BBR's ProbeRTT): under a crowd no sample is no-load,
 *   so `current` drops to max(min, floor(limit / 4)) until `probeSamples` samples started at
 *   that concurrency; their mean becomes the long-term RTT and the limit is restored. A probe
 *   starts when no no-load sample was seen for `probeIntervalMs` (counted from the first
 *   sample) and the limit binds, or, at most once per `probeMinIntervalMs`, when the
 *   long-term RTT looks wrong: three windows in a row had a short-term RTT below 0.8 x the
 *   long-term RTT as measured, without the drift rule's moves, while the limit binds (the
 *   origin got faster, e.g. an overload it had is over; one such window is just the endpoint
 *   mix, and a probe holds the limit at a quarter for a few round trips), or,
 *   without waiting for that interval, when the limit fell below half its peak since the last
 *   probe (the origin got slower, or lost capacity, or the host it shares got busy: only a
 *   low-concurrency measurement tells which, and meanwhile the windows are evidence for
 *   refusing at arrival; each probe resets the peak, so this repeats at most log2(max / min)
 *   times while the limit falls), or when the limit binds (a window used every permit) but the
 *   long-term RTT rests on fewer than 3 no-load samples (no baseline: a crowd from the first
 *   request, or an initial limit far above capacity). A probe costs a few round trips at a
 *   quarter of the concurrency, so it never starts while the limit does not bind, nor when a
 *   few no-load samples from before the crowd already give a baseline: at a cold start that
 *   probe held fills back while every page was a miss, and the queue behind it was shed.
 * - Drift down: when a window's short-term RTT is below 0.8 x the long-term RTT, the long-term
 *   RTT also moves halfway down to it at once, before the probe confirms.
 *
 * Short-term RTT (`shortRttMs`): the trimmed mean of one window's samples, i.e. the mean of
 * the fastest 80 % (the slowest floor(n / 5) dropped; Envoy's adaptive concurrency samples a
 * percentile, p50 by default, for the same reason): a site's endpoints do not cost the same,
 * and the plain mean of a window that holds one 5 s report among twenty 10 ms pages is 250 ms,
 * which halved the limit window after window on an origin with room to spare. The trimmed
 * mean moves only when most requests slow down, which is what saturation does, and keeps the
 * queueing delay of a saturated window (a median would discount half of it, and the limit
 * would settle higher). (The Limiter also keeps requests held past its overdue threshold out
 * of the samples.) When the samples name their latency classes (LimitSample.stratum), each
 * class weighs its share of the recent traffic, not the count the window happens to hold
 * (stratifiedTrimmedMean: each class's own trimmed mean, by its share; a probe's mean
 * likewise), and the window is judged against those classes' own no-load round trips (see
 * Baselines), with an allowance for its chance spread (NOISE_SE). A window closes once it
 * holds >= `minWindowSamples` samples and has lasted >= max(minWindowMs, last short-term RTT),
 * i.e. about one round trip, so each update sees the effect of the one before (updating per
 * sample with a round trip of delay in the loop overshoots and oscillates), and once it has
 * heard from the classes that make up half the traffic, or after 8 such lengths (at most 1 s)
 * without them (WINDOW_COVERAGE).
 *
 * Exoneration: an origin slow on its own is not a queue. Latency alone cannot tell an origin
 * that got slower (its database, a dependency) from one our concurrency saturates, and cutting
 * the limit for the first starves the clients it could serve: every answer taking 2 s, 40
 * clients with room for them all, and the limit fell from 8 to 2 while 1 728 of the 1 847
 * requests in those 30 s were refused (a trial). These tell them apart:
 * - Little's law bounds what queueing can do: n requests queued one behind another in an
 *   origin take at most n service times, so a window whose median round trip exceeds its
 *   highest count of requests at the origin (LimitSample.originInflight: the slow lane's
 *   included; plus LimitSample.peerInflight, the other gateways') times the allowance, and
 *   twice the allowance, with no drop in it, is not queueing behind our requests. Such a
 *   window neither cuts the limit nor counts as evidence, and the second in a row is the
 *   origin's new no-load RTT: the long-term RTT takes it, the limit goes
 *   to EXONERATE_GROWTH x its peak (judged in hindsight like a slow-start step), and slow start
 *   tests higher. The median, not the trimmed mean: the answers an origin's pause releases at
 *   once fill one window, and in the next one (a round trip long) quick answers are most.
 *   After a re-base the first window far quicker than it (the drift rule) is probed at once,
 *   and no slow-start step is taken in such a window: against the stale allowance an origin
 *   quick again passed at 3-5 times its slots (review).
 * - A smaller jump (round trips past twice the allowance, at the limit, no drops) for
 *   JUMP_WINDOWS windows in a row starts a probe; a probe without drops whose round trips at a
 *   quarter of the concurrency are still EXONERATE_RATIO of the jumped windows' (queueing would
 *   have fallen with the concurrency) restores the limit's peak, and the windows it left are no
 *   evidence. An origin with C slots at twice C reads at most half.
 * - A probe started by the limit's fall (not by a jump), without drops, with its samples, that
 *   measures the no-load RTT (less the gateway's own event-loop delay meanwhile) at
 *   PROBE_ROSE_RATIO times the measured one before it or more: the origin got slower on its
 *   own, though the windows did not read as a jump (with the window noise allowed for, an
 *   origin every answer of which took 3x read 0.57-0.86). No exoneration (the limit stays),
 *   but the windows judged against the old RTT are no evidence, and slow start climbs again
 *   from there (forgetQueueing): kept, that evidence had arrivals refused against the CoDel
 *   target after the probe while the limit crept back from 6 by a third of a permit a window
 *   (differential bench, seed 9, the limit bound at 13).
 * Windows that did not bind (the requests at the origin never used the whole limit, or most of
 * the window's requests found a permit to spare) and whose round trips read as queueing, at a
 * concurrency that a window judged clear within CLEAR_MEMORY_MS (or four windows' lengths) held
 * at the origin or more, say nothing: no cut, no evidence, no slow-start verdict. The origin
 * answered that many requests clear a moment ago, so the round trips that rose at the same or
 * fewer are not our concurrency's doing: a busy host (the origin's CPU taken by another
 * process, a GC pause), a window that held a few of a slow endpoint's answers. On a noisy
 * 2-core host an ordinary day's windows flipped between 10 and 50 ms at 6-11 requests in
 * flight, well under a limit of 11-13; each slow one cut the limit by a tenth, none could grow
 * it back (a window that does not bind never grows it), and once the limit was down to 7 the
 * day's bursts queued behind it, the same noise read as evidence, and arrivals were refused
 * `predicted_wait` against an origin with unlimited workers (differential fuzzer: 6-206 a
 * minute, POSTs included; direct none). A window that binds is judged as before: it alone
 * tells what more concurrency does, and a crowd's windows all bind. Nor is a window past that
 * concurrency set aside, so an origin that lost capacity (its requests in flight grow as its
 * round trips do, at the same arrivals) is cut as soon as they pass what it answered clear, and
 * at the latest once that memory runs out.
 *
 * An origin saturated by others (other gateways in front of it, its own jobs) looks slow on its
 * own: this gateway then sends what it would to a slow origin, as a proxy without a limit
 * would. The probe alone had that weakness before (it took the others' queue as the no-load
 * RTT).
 *
 * Several gateways (sharing a Redis tier: origin/peer-load.ts). Each learns its own limit, and
 * the origin's queue holds all of their requests: against one origin with 8 slots, three
 * gateways found it slow on its own by their own counts and took it to 28-34 in flight where
 * one alone held 19 (a trial). So the others' in-flight counts, as they last told them, count
 * wherever this one's do in judging the origin's load: in the Little's-law bound above (what the
 * origin held) and in the no-load test of a sample (a request of ours alone at an origin the
 * others keep busy measures their queue); and a no-load probe is told to them and they probe
 * too (joinProbe): a probe at a quarter of one gateway's limit beside the others at theirs
 * measured the others' queue as the no-load RTT. A model fleet of three in front of 8 slots
 * held the origin at 30-41 told nothing, 13 told. And their limits no window has judged yet
 * share `initial` (shareUnjudged): three of 8 are 24 for an origin one gateway would send 8.
 *
 * Per window:
 *   gradient = clamp((tolerance * longRttMs + slack) / shortRttMs, 0.5, 1.0)
 *              (slack: RTT_NOISE_MS, RTT_NOISE_RATIO of longRttMs, or the host's delay)
 *              (and <= 1 - drops / samples when the window holds drops: a drop-heavy window
 *               backs off in proportion, a stray 503 barely moves it)
 *   target   = limit * gradient + queueSize(limit)        queueSize default max(1, sqrt(limit) / 2)
 *   limit    = limit * (1 - smoothing) + target * smoothing, within [min, max]
 *   If the window's peak in-flight stayed below the limit, or most of its requests started
 *   with a permit to spare, the limit did not bind: it may shrink but never grow (an origin
 *   that was not pushed to the limit must not inflate it).
 * At equilibrium limit * (1 - gradient) = queueSize; against an origin with C slots that means
 * limit ~= tolerance * C + queueSize: about 1.2 C for C = 8 and 1.1 C for C = 32 by default.
 * The window delay makes this a second-order loop, x' = (1 - s) x - s x_prev, damped for s <= 1.
 *
 * Slow start (TCP's, and the reason it exists there): from the initial limit the additive
 * headroom above takes seconds to reach a concurrency an ordinary site needs (8 to 40 at
 * +sqrt(limit) / 8 per window), and the queue behind a limit still climbing is refused at
 * arrival (`predicted_wait`) although the origin has room: a normal day's 100 clients lost
 * half their requests in the first six seconds that way. So until the first window shows
 * queueing in the origin (a gradient below SLOW_START_EXIT) or a drop, a window whose requests
 * mostly started with every permit in use (a queue waits: a cold cache's bursts of fills that
 * touch the limit now and then do not count) multiplies the limit by SLOW_START_FACTOR, once
 * per window measured wholly at the new limit (a window holding requests started before the
 * last step says nothing about it). Its test is stricter than the gradient's: the window's
 * 80th-percentile RTT (not the trimmed mean) within the same allowance, and, as HyStart's
 * delay-increase test, within SLOW_START_RISE of the percentile of the window that made the
 * last step (+ 5 ms), its spread (80th over 20th percentile) within SLOW_START_RISE of that
 * window's: a baseline taken while everything was still cold can read a 50 ms origin as 100 ms,
 * and hide from the first test the queueing the others see. Against an origin
 * with C slots it stops by 1.5 C: at C the RTT is flat; at 1.5 C a third of the window waits
 * behind the slots, which ends slow start for good and hands over to the gradient. Where the
 * samples name their latency classes, the percentile is read class by class (classPercentile),
 * compared with the last step's relative to its window's baseline, with the chance spread
 * allowed for, and without the spread test. Samples of no class are read as they are, and an
 * origin whose own latencies spread widely then leaves slow start at once.
 * It needs a baseline (MIN_BASELINE_SAMPLES no-load samples); without one the probe comes first.
 * Its steps are judged again in hindsight against the no-load RTT learned later, and taken back
 * when it shows their windows were queueing (see judgeStepsInHindsight).
 *
 * Known limitation: `min` must not exceed the origin's real concurrency, or no-load samples and
 * probes see queueing and the limit settles proportionally too high.
 */
import { checkBounds, clamp, type Limit, type LimitSample } from './limit.js';

export interface Gradient2Options {
  initial: number;
  min: number;
  max: number;
  /** Allowed ratio of short-term to long-term RTT before backing off. Default 1.0. */
  tolerance?: number;
  /** Weight of each window's target, in (0, 1]. Default 0.25. */
  smoothing?: number;
  /** Fewest samples in a window. Default 5. */
  minWindowSamples?: number;
  /** Shortest window in ms (windows also last at least one short-term RTT). Default 0. */
  minWindowMs?: number;
  /** EWMA span of the long-term RTT, in no-load samples. Default 100. */
  longWindowSamples?: number;
  /** Headroom added each window, as a function of the limit. Default max(1, sqrt(limit) / 2). */
  queueSize?: (limit: number) => number;
  /** Probe the no-load RTT when none was seen for this long, in ms. Default 30000. */
  probeIntervalMs?: number;
  /** Least time between probes triggered by a suspicious window (not a halved limit), in ms. Default 2000. */
  probeMinIntervalMs?: number;
  /** Samples a probe collects. Default 10. */
  probeSamples?: number;
  /** Slow start from the initial limit (see above). Default true. */
  slowStart?: boolean;
}

/** For metrics, logs and tests. */
export interface Gradient2Readings {
  /** The unrounded limit estimate (excludes a probe's temporary limit). */
  estimate: number;
  longRttMs: number | undefined;
  shortRttMs: number | undefined;
  lastGradient: number;
  probing: boolean;
  /** Probes started so far. */
  probes: number;
  /** Still in slow start (no window has shown queueing yet). */
  slowStart: boolean;
  /** The last window failed slow start's tests by a little: the next one decides (SLOW_START_DOUBT_MARGIN). */
  slowStartDoubt: boolean;
  /** Times the origin was found slow on its own, not queueing (see Exoneration). */
  exonerations: number;
  /** Windows that said nothing: they did not bind, at a concurrency the origin answered clear a moment ago (see Windows that did not bind). */
  dismissed: number;
}

const defaultQueueSize = (limit: number): number => Math.max(1, Math.sqrt(limit) / 2);
/** No-load samples that make a long-term RTT to start from, without a probe. */
const MIN_BASELINE_SAMPLES = 3;
/** A short-term RTT below this fraction of the long-term one means the long-term one is stale. */
const DRIFT_RATIO = 0.8;
/**
 * Slack added to the long-term RTT before comparing, ms: the gateway measures round trips on
 * its own event loop, whose turns (a burst of requests, a GC pause) add a few ms to every
 * sample. Against an origin answering in 1-2 ms that jitter alone read as a 5x slowdown and
 * halved the limit window after window; against one answering in 50 ms it is 10 % headroom.
 */
const RTT_NOISE_MS = 5;
/**
 * And at least this share of the long-term RTT: an origin whose every answer takes 2 s varies
 * by a few ms from one window to the next, and against a long-term RTT measured from one such
 * window half of the following windows read as queueing by a few thousandths, which was
 * evidence enough to cap a standing queue's waits and refuse at arrival.
 */
const RTT_NOISE_RATIO = 0.02;
/**
 * And the window's sampling noise: this many standard errors of its mean round trip less its
 * baseline, from the spread each sample's latency class shows with nobody queueing (its
 * baseline's variance; see windowNoise). Samples that name no class get none. A site's pages
 * do not all cost the same: uncached pages of 100-250 ms (WordPress's, MediaWiki's) spread a window of eight by
 * ±15 ms about the mix's mean, a third of the windows read as queueing against a 5 ms slack,
 * the limit stayed at 7-16 for 50 clients who needed 30 at an origin with room for any number,
 * and 41-65 % of the requests were refused `predicted_wait` (the normal-day bench with
 * `--page-ms 100-250 --page-share 0.7`). The no-load spread, not the window's own: queueing
 * behind C slots spreads a window too (the requests that found a slot and those that waited),
 * and allowing for that let a crowd's limit climb to 1.7 C. Queueing moves every round trip of
 * a window alike, so it shows past the noise once it is more than a chance few ms.
 */
const NOISE_SE = 2;
/**
 * The longest a no-load probe holds the limit down, ms, however few samples it has: this, or
 * three of the round trips the last window measured when they are longer (PROBE_RTTS), up to
 * PROBE_CAP_MS. A probe cut at 1 s against an origin whose every answer takes 2 s never saw a
 * request started at its concurrency come back, kept a baseline of milliseconds, and the limit
 * sank to its minimum with 6 of 8 workers wanted (failure-day trial).
 */
const PROBE_MAX_MS = 1_000;
const PROBE_RTTS = 3;
const PROBE_CAP_MS = 30_000;
/** A probe's round trips of one class from some point on this many times quicker than every one before: the origin got quicker (sinceStep). */
const PROBE_STEP_RATIO = 2;
/** ...with this many or more before that point (sinceStep). */
const PROBE_STEP_BEFORE = 2;
/**
 * A window whose round trips are past twice the allowance (an unclamped gradient below this)
 * is a jump that queueing rarely makes at once: the second such window in a row, at the limit,
 * starts a probe (see Exoneration in the class doc).
 */
const JUMP_GRADIENT = 0.5;
const JUMP_WINDOWS = 2;
/**
 * A probe whose round trips at a quarter of the concurrency are at least this share of the
 * jumped windows' is the origin's own slowness, not queueing (see Exoneration).
 */
const EXONERATE_RATIO = 0.8;
/**
 * A probe that measures the no-load RTT at least this multiple of the one before it found the
 * origin slower on its own: the queueing read against the old one is void (see Exoneration).
 */
const PROBE_ROSE_RATIO = 1.5;
/**
 * With a window set aside lately, since the last probe, its round trips doubled
 * (DISMISSED_DOUBLED), a limit that fell below 1 / this of its peak is probed at once (see
 * closeWindow), not only one below half.
 */
const DISMISSED_PROBE_FALL = 1.5;
/**
 * ...when that window's round trips (its trimmed mean) were at least this multiple of its
 * classes' no-load ones. Not the jump test's gradient: with a small window's noise allowed for,
 * windows of an origin every answer of which took 3x read 0.48-0.63.
 */
const DISMISSED_DOUBLED = 2;
/** The limit after an exoneration, as a multiple of its peak before the jump (see Exoneration). */
const EXONERATE_GROWTH = 2;
/**
 * ...or the demand the window saw (requests at the origin and waiting for a permit), up to
 * this multiple of the peak: an origin whose every answer takes 10 s, with 40 clients wanting
 * it, got from 8 to 16 after 26 s of refusals, and slow start's windows last two of its round
 * trips (trial).
 */
const EXONERATE_DEMAND_CAP = 4;
/**
 * A window whose median round trip is this many times what queueing behind our requests could
 * make, that holds CLEAR_MIN_SAMPLES round trips, whose round trips are alike (80th over 20th
 * percentile within CLEAR_MAX_SPREAD), whose requests started over at least
 * CLEAR_MIN_START_SPAN of that median, and whose answers came over at least half as long as
 * that, re-bases at once, not on the second such window: at 10 s round trips a second window
 * costs 10 s more of refusals (trial). Not the answers an origin's pause releases at once:
 * they come within a moment of each other, however their requests started (together before
 * it, or one after another during it), while an origin slow on its own answers the requests it
 * is sent one after another about as long after each.
 */
const UNEXPLAINED_CLEAR = 2;
const CLEAR_MIN_SAMPLES = 5;
const CLEAR_MAX_SPREAD = 1.5;
const CLEAR_MIN_START_SPAN = 0.1;
/** Windows in a row below DRIFT_RATIO before the long-term RTT is re-measured by a probe. */
const DRIFT_WINDOWS = 3;
/** Window samples kept for the trimmed mean; past this, reservoir sampling keeps a uniform subset. */
const WINDOW_RESERVOIR = 512;
/**
 * A window closes once it has heard from latency classes that make up this share of the recent
 * traffic (LimitSample.stratumShare, as each class's first sample in the window gave it), or
 * after COVERAGE_WAIT_SPANS of its usual length (at most COVERAGE_WAIT_MAX_MS). Against a site
 * whose 50-150 ms pages are one request in seven, a closed
 * loop's limit of 20 was now and then held wholly by those pages: the fast pages waited for
 * permits, and the windows that closed meanwhile held the slow class alone, read as a fourfold
 * queue (a normal-day trial). Their round trips were the endpoint's own; the origin did not queue.
 * The cost: a crowd arriving on an endpoint that was a small share of the traffic (its share
 * catches up only over a few hundred samples) waits those lengths for its first windows (review:
 * its first evidence came 0.8 s after the crowd, 0.4 s on an endpoint that had the traffic).
 * Closing such a window once it held twice the samples of the one before was tried, and the
 * trial's closed loop drew about twice the refusals (8.3 % against 4.2 % over nine alternated
 * pairs on a busy host): not kept.
 */
const WINDOW_COVERAGE = 0.5;
const COVERAGE_WAIT_SPANS = 8;
const COVERAGE_WAIT_MAX_MS = 1_000;
/** A no-load sample moves the long-term RTT by at most this multiple of it. */
const LONG_CLIP = 2;
/** At most this many latency classes keep a no-load round trip of their own (see Baselines); the least shared goes first. */
const MAX_BASELINES = 128;
/** A class without a no-load sample takes the mean of this many of its first round trips (see noteShare). */
const PROVISIONAL_SAMPLES = 5;
/** Slow start: the limit's factor per binding window measured at the current limit. */
const SLOW_START_FACTOR = 1.5;
/** How long a window that showed queueing stays evidence of it (see showsQueueing), ms. */
const QUEUEING_EVIDENCE_MS = 1_000;
/** The recent windows of which at least half must have shown queueing (see showsQueueing). */
const EVIDENCE_WINDOWS = 8;
/** The share of them that makes the evidence strong (see showsSustainedQueueing). */
const SUSTAINED_SHARE = 0.75;
/** Windows judged clear that are remembered (see Windows that did not bind). */
const CLEAR_WINDOWS = 16;
/** How long a window judged clear is remembered, ms, or four windows' lengths when longer (see Windows that did not bind). */
const CLEAR_MEMORY_MS = 2_000;
/** After the limit first binds, how long it counts as still learning (see isColdStart), ms. */
export const COLD_START_MS = 5_000;
/** A limit that has not bound for this long is learning again when it next binds (see isColdStart), ms. */
export const RELEARN_AFTER_IDLE_MS = 5_000;
/** A limit that has not had every permit in use for this long joins no other gateway's probe (see joinProbe), ms. */
const JOIN_BINDING_MS = 1_000;
/**
 * The least time from the end of the last probe to a joined one (see joinProbe): 5 s, or
 * JOIN_GAP_PROBES times the last probe's length. However many gateways, or whatever publishes
 * on the channel, a limit spends at most a fifth of its time at a quarter for the others.
 */
const JOIN_MIN_INTERVAL_MS = 5_000;
const JOIN_GAP_PROBES = 4;
/** A window whose gradient is below this ends slow start for good (the origin queues). */
const SLOW_START_EXIT = 0.8;
/**
 * How far a class's own 80th percentile lies above its mean, in its standard deviations (a
 * normal distribution's; a uniform one's is 1.04, an exponential's 0.61): see classPercentile.
 */
const SPREAD_Z = 0.84;
/** A class's spread, as a share of its round trip, until its no-load samples tell (see classVariance). */
const YOUNG_CV = 0.25;
const YOUNG_PRIOR_SAMPLES = 2;
/** A class's no-load spread rests on its own samples alone from this many on (see classVariance). */
const SPREAD_PRIOR_UNTIL = 10;
/** A window at the new limit whose 80th percentile rose past this multiple of the last step's ends it too. */
const SLOW_START_RISE = 1.25;
/**
 * A window read class by class that fails slow start's tests by less than this factor (its 80th
 * percentile within it of the bound, or its gradient within it of SLOW_START_EXIT) is a doubt,
 * as HyStart++ (RFC 9406) takes its first signal in its conservative phase: no step and no cut,
 * and slow start ends only if the next window fails too. See the slow-start exit in closeWindow.
 */
const SLOW_START_DOUBT_MARGIN = 1.2;

export class Gradient2Limit implements Limit {
  private min: number;
  private max: number;
  private readonly tolerance: number;
  private readonly smoothing: number;
  private readonly minWindowSamples: number;
  private readonly minWindowMs: number;
  private readonly longAlpha: number;
  private readonly queueSize: (limit: number) => number;
  private readonly probeIntervalMs: number;
  private readonly probeMinIntervalMs: number;
  private readonly probeSamples: number;

  private estimate: number;
  /** Gradient2Options.initial, within [min, max] (see shareUnjudged). */
  private readonly initial: number;
  /**
   * A window has judged the limit where it bound (most of its requests started with every
   * permit in use), or a probe or an exoneration set it: from then on only the rules below move
   * it (see shareUnjudged).
   */
  private judged = false;
  private longRttMs: number | undefined;
  private longCount = 0;
  /**
   * Each latency class's no-load round trip (LimitSample.stratum; -1 for samples of none), its
   * no-load sample count and latest share of the traffic (see Baselines). The long-term RTT is
   * their share-weighted mean plus `offset`.
   */
  private readonly baselines = new Map<number, Baseline>();
  /** What probes, exonerations and the drift rule learned beyond the classes' own round trips, ms. */
  private offset = 0;
  /** `offset` without the drift rule's moves (measuredLongRttMs). */
  private measuredOffset = 0;
  private shortRttMs: number | undefined;
  private lastGradient = 1;
  /** When a window last showed the origin queueing (RTT gradient below 1, or drops); see showsQueueing. */
  private lastQueueingAt = -Infinity;
  /** The last EVIDENCE_WINDOWS windows: when each closed, and whether it showed queueing (a ring). */
  private readonly recentWindowAt = new Float64Array(EVIDENCE_WINDOWS).fill(-Infinity);
  private readonly recentWindowQueued = new Uint8Array(EVIDENCE_WINDOWS);
  private recentWindowNext = 0;
  /** The last CLEAR_WINDOWS windows judged clear: when each closed, and its most requests at the origin (a ring; see noteClear). */
  private readonly clearWindowAt = new Float64Array(CLEAR_WINDOWS).fill(-Infinity);
  private readonly clearWindowInflight = new Float64Array(CLEAR_WINDOWS);
  private clearWindowNext = 0;
  /** Windows set aside as saying nothing (see Windows that did not bind), for readings. */
  private dismissed = 0;
  /** When a window was last set aside with round trips DISMISSED_DOUBLED times its classes' no-load ones (see closeWindow's probe at a fall of a third). */
  private lastDismissedDoubledAt = -Infinity;
  /** When a window last held drops (timeouts, 503s, refused connections): evidence on its own. */
  private lastDropsAt = -Infinity;
  /**
   * When a request first started with every permit in use, or first did again after none had
   * for RELEARN_AFTER_IDLE_MS (the cold start counts from it).
   */
  private firstBindingAt: number | undefined;
  /** When a request last started with every permit in use. */
  private lastBindingAt = -Infinity;
  /** How long the last window lasted, ms (see showsQueueing). */
  private lastWindowMs = 0;
  /** Windows in a row whose short-term RTT fell below DRIFT_RATIO x the long-term one. */
  private driftWindows = 0;
  /** Windows in a row whose unclamped gradient fell below JUMP_GRADIENT (see Exoneration). */
  private jumpWindows = 0;
  /** Windows in a row whose round trips queueing at their concurrency cannot explain (see Exoneration). */
  private unexplainedWindows = 0;
  /** When the last exoneration was: requests started before it are no no-load samples. */
  private exoneratedAt = -Infinity;
  /** The long-term RTT was re-based on unexplained windows and no probe has measured it since. */
  private rebased = false;
  /** The running probe followed such windows: their short-term RTT (see Exoneration). */
  private probeJumpRttMs: number | undefined;
  /** The measured long-term RTT (no drift-rule moves) when the running probe started, if the limit's fall started it (see Exoneration). */
  private probeLongBeforeMs: number | undefined;
  /** The most event-loop delay a sample of the running probe waited, ms (see endProbe). */
  private probeHostDelayMs = 0;
  /** Times the origin was found slow on its own, not queueing (see Exoneration). */
  private exonerations = 0;
  /** When the last no-load sample was seen; the probe interval counts from the first sample. */
  private lastNoLoadAt: number | undefined;
  private lastProbeAt = -Infinity;
  private peakEstimate: number;
  /** Slow start: on until the first window that shows queueing or holds a drop. */
  private slowStart = true;
  /** When slow start last raised the limit. */
  private slowStartStepAt = -Infinity;
  /** The 80th-percentile RTT of the window that made the last step. */
  private slowStartRefP80: number | undefined;
  /** Its spread, 80th over 20th percentile. */
  private slowStartRefSpread = 1;
  /** What that window's classes read with nobody queueing, and whether it was read class by class (classPercentile). */
  private slowStartRefBase = 1;
  private slowStartRefClassRead = false;
  /** That window's own chance spread, ms (see NOISE_SE): a reference is one window too. */
  private slowStartRefNoise = 0;
  /**
   * The 80th percentile of the window that made slow start's first step, read class by class,
   * and that window's baseline: what later windows of the mix are judged against instead of the
   * baselines (see closeWindow).
   */
  private slowStartFirstP80: number | undefined;
  private slowStartFirstBase = 1;
  private slowStartFirstNoise = 0;
  private slowStartDoubt = false;
  /**
   * Slow start's steps while it lasts, oldest first: the 80th-percentile RTT and the slack that
   * justified each, and the estimate and peak before it (see judgeStepsInHindsight). A window
   * read class by class keeps its classes' shares, and its slack is over their baselines.
   */
  private readonly slowStartSteps: { p80: number; slack: number; before: number; peakBefore: number; mix: number; shares?: Map<number, number> }[] = [];
  /**
   * The no-load RTT as no-load samples and probes measured it, without the drift rule's moves
   * (one quick window is the endpoint mix): what slow start's steps are judged against.
   */
  private measuredLongRttMs: number | undefined;
  /** The scale the last sample was read on (LimitSample.scaleMs; see followScale). */
  private scaleMs: number | undefined;

  // The open window.
  private windowStartAt = 0;
  private windowSamples = 0;
  private readonly windowRtts = new Float64Array(WINDOW_RESERVOIR);
  /** Each kept sample's stratum (LimitSample.stratum; -1: none), beside windowRtts. */
  private readonly windowStrata = new Int32Array(WINDOW_RESERVOIR);
  /**
   * Each kept sample's round trip as the origin took it (LimitSample.classBaseMs read back),
   * beside windowRtts: the window is read on the scale as it stands when it closes (readWindow).
   */
  private readonly windowRaws = new Float64Array(WINDOW_RESERVOIR);
  /** The latest share (LimitSample.stratumShare) of each stratum seen in the window. */
  private readonly windowShares = new Map<number, number>();
  /** The share of the traffic whose classes the window has heard from (1 without strata); see WINDOW_COVERAGE. */
  private windowCoverage = 0;
  private windowRttCount = 0;
  private windowDrops = 0;
  private windowMaxInflight = 0;
  /**
   * Highest LimitSample.originInflight (else inflight) plus LimitSample.peerInflight (the other
   * gateways' requests) among the window's samples: what the origin held (see Exoneration).
   */
  private windowMaxTotalInflight = 0;
  /** The most requests at the origin and waiting for a permit together, over the window (LimitSample.waiting). */
  private windowMaxDemand = 0;
  /** Largest host delay (LimitSample.hostDelayMs) among the window's samples. */
  private windowHostDelayMs = 0;
  /** When the earliest request among the window's samples started. */
  private windowFirstStartAt = Infinity;
  /** When the latest-started request of the window started (see UNEXPLAINED_CLEAR). */
  private windowLastStartAt = -Infinity;
  /** The window's samples that started with every permit in use. */
  private windowAtLimit = 0;

  // The probe; probeLimit 0 = not probing.
  private probeLimit = 0;
  /** How long the running probe may last (startProbe). */
  private probeMaxMs = PROBE_MAX_MS;
  private probeCount = 0;
  /** Drops while the probe ran: the origin said it was overloaded (no exoneration then). */
  private probeDrops = 0;
  /** The most requests at the origin and waiting together during the running probe (see exonerate). */
  private probeMaxDemand = 0;
  /** The probe's samples by stratum: their sum, count and latest share (see probeMean), and each one's start and round trip (see sinceStep). */
  private readonly probeStrata = new Map<number, ProbeStratum>();
  private probes = 0;

  constructor(opts: Gradient2Options) {
    checkBounds(opts.initial, opts.min, opts.max);
    this.min = opts.min;
    this.max = opts.max;
    this.tolerance = opts.tolerance ?? 1.0;
    this.smoothing = opts.smoothing ?? 0.25;
    this.minWindowSamples = opts.minWindowSamples ?? 5;
    this.minWindowMs = opts.minWindowMs ?? 0;
    const longWindowSamples = opts.longWindowSamples ?? 100;
    this.queueSize = opts.queueSize ?? defaultQueueSize;
    this.probeIntervalMs = opts.probeIntervalMs ?? 30_000;
    this.probeMinIntervalMs = opts.probeMinIntervalMs ?? 2_000;
    this.probeSamples = opts.probeSamples ?? 10;
    if (!(this.tolerance >= 0.5 && this.tolerance <= 3))
      throw new TypeError(`tolerance must be in [0.5, 3], got ${this.tolerance}`);
    if (!(this.smoothing > 0 && this.smoothing <= 1))
      throw new TypeError(`smoothing must be in (0, 1], got ${this.smoothing}`);
    if (!(Number.isInteger(this.minWindowSamples) && this.minWindowSamples >= 1))
      throw new TypeError(`minWindowSamples must be an integer >= 1, got ${this.minWindowSamples}`);
    if (!(this.minWindowMs >= 0)) throw new TypeError(`minWindowMs must be >= 0, got ${this.minWindowMs}`);
    if (!(longWindowSamples >= 1)) throw new TypeError(`longWindowSamples must be >= 1, got ${longWindowSamples}`);
    if (!(this.probeIntervalMs > 0)) throw new TypeError(`probeIntervalMs must be > 0, got ${this.probeIntervalMs}`);
    if (!(this.probeMinIntervalMs >= 0))
      throw new TypeError(`probeMinIntervalMs must be >= 0, got ${this.probeMinIntervalMs}`);
    if (!(Number.isInteger(this.probeSamples) && this.probeSamples >= 1))
      throw new TypeError(`probeSamples must be an integer >= 1, got ${this.probeSamples}`);
    this.longAlpha = 2 / (longWindowSamples + 1);
    this.estimate = clamp(opts.initial, this.min, this.max);
    this.initial = this.estimate;
    this.peakEstimate = this.estimate;
    this.slowStart = opts.slowStart ?? true;
  }

  get current(): number {
    return this.probeLimit > 0 ? this.probeLimit : Math.floor(this.estimate);
  }

  /** The estimate, also while a probe holds `current` down (see Limit.planning). */
  get planning(): number {
    return Math.floor(this.estimate);
  }

  get isProbing(): boolean {
    return this.probeLimit > 0;
  }

  /**
   * Windows within the last QUEUEING_EVIDENCE_MS (or three short-term round trips, or two
   * windows, when longer: a small limit's windows of a slow origin last seconds) had a gradient
   * below 1: their round trips were longer than the no-load RTT allows (plus the slack for the
   * gateway's own delay); and at least half of the last EVIDENCE_WINDOWS windows closed in that
   * time did, unless one of them held drops (the origin said it was overloaded, or timed out:
   * evidence on its own). One such window among good ones is noise (a busy host, a
   * window that held a few of a slow endpoint's answers): 100 clients in a closed loop against
   * an origin with room to spare stood in a queue behind a limit still climbing through 40, and
   * such windows, once the cold start was over, let the standing queue's cap refuse them; each
   * refused client came straight back, the refusals took the CPU, and 85 % of their requests
   * were refused for the rest of the run (a normal-day bench, unpinned). An origin that queues
   * shows it in most windows: past its capacity the gradient settles below 1. Slow start's
   * stricter tests (the 80th percentile, the rise and the spread against the stepping window)
   * end slow start, but are no such evidence: on a site with mixed latencies they fire on the
   * endpoint mix. Before a baseline exists only drops are evidence.
   */
  showsQueueing(now: number): boolean {
    return this.queueingShare(now) >= 0.5;
  }

  /**
   * Strong evidence: at least SUSTAINED_SHARE of those windows showed queueing (past its
   * capacity an origin shows it in nearly every window: 94-100 % in a x50 crowd), or drops. A
   * busy host's noise or a mix of endpoints shows it in about half (differential fuzzer).
   */
  showsSustainedQueueing(now: number): boolean {
    return this.queueingShare(now) >= SUSTAINED_SHARE;
  }

  /** The share of the recent windows that showed queueing (see showsQueueing): 1 with drops, 0 with none. */
  private queueingShare(now: number): number {
    const period = Math.max(QUEUEING_EVIDENCE_MS, 3 * (this.shortRttMs ?? 0), 2 * this.lastWindowMs);
    if (now - this.lastDropsAt <= period) return 1;
    if (now - this.lastQueueingAt > period) return 0;
    let closed = 0;
    let queued = 0;
    for (let i = 0; i < EVIDENCE_WINDOWS; i++) {
      const at = this.recentWindowAt[i]!;
      if (now - at > period) continue;
      closed++;
      if (this.recentWindowQueued[i] === 1) queued++;
    }
    return closed === 0 ? 0 : queued / closed;
  }

  /**
   * The window used the whole limit, with most of its requests started at it (they waited for
   * a permit, or would have): only such a window tells what more concurrency would do, so only
   * it may grow the limit, and only it may cut the limit on round trips the origin answered
   * clear at the same concurrency a moment ago (see Windows that did not bind).
   */
  private binding(): boolean {
    return this.windowMaxInflight >= Math.floor(this.estimate) && this.windowAtLimit * 2 >= this.windowSamples;
  }

  /** Remembers a window judged clear (gradient of 1), with the most requests it had at the origin. */
  private noteClear(now: number): void {
    this.clearWindowAt[this.clearWindowNext] = now;
    this.clearWindowInflight[this.clearWindowNext] = this.windowMaxTotalInflight;
    this.clearWindowNext = (this.clearWindowNext + 1) % CLEAR_WINDOWS;
  }

  /**
   * The most requests at the origin (the slow lane's and the other gateways' included) of a
   * window judged clear within CLEAR_MEMORY_MS, or four windows' lengths when longer; 0 for none.
   */
  private clearInflight(now: number): number {
    const memory = Math.max(CLEAR_MEMORY_MS, 4 * this.lastWindowMs);
    let most = 0;
    for (let i = 0; i < CLEAR_WINDOWS; i++) {
      if (now - this.clearWindowAt[i]! <= memory && this.clearWindowInflight[i]! > most) most = this.clearWindowInflight[i]!;
    }
    return most;
  }

  /** A reloaded min/max (Limit.setBounds): the estimate, its peak and a probe's limit kept within them. */
  setBounds(min: number, max: number): void {
    checkBounds(min, min, max);
    this.min = min;
    this.max = max;
    this.estimate = clamp(this.estimate, min, max);
    this.peakEstimate = clamp(this.peakEstimate, min, max);
    if (this.probeLimit > 0) this.probeLimit = clamp(this.probeLimit, min, max);
  }

  /**
   * Until the limit has bound (a request started with every permit in use) and for
   * COLD_START_MS after it first did: the limit is then still climbing from its initial value,
   * against a no-load RTT taken from a few samples (often while the gateway, its connections
   * and the origin were cold, or by health probes alone), and the gateway is busy accepting
   * every new client at once. A queue behind it is mostly the limit's lag, not a standing
   * queue in the origin: 50 clients arriving at a fresh gateway lost 20-30 % of their requests
   * in the first three seconds to the standing-queue cap, behind a limit of 7-15 that settled
   * at 23-25, with no refusal, once warm. Counted from the first binding, not the first
   * sample: a gateway started long before its first crowd (health probes, a few visitors) has
   * learned nothing about the concurrency the crowd needs. See Limit.isColdStart for what the
   * Limiter does with it.
   *
   * Learning starts over when the limit binds after RELEARN_AFTER_IDLE_MS without binding (TCP
   * restarts slow start after an idle period for the same reason, RFC 5681 §4.1): what the
   * windows showed before was measured at another demand, and a burst of new clients on a
   * warm gateway is the cold start's case again. 100 clients arriving at once, a few seconds
   * after 50 others had left, were refused 130-350 of their first 3 000 requests in the first
   * two seconds (a new-user trial) against an origin with room to spare.
   */
  isColdStart(now: number): boolean {
    return this.firstBindingAt === undefined || now - this.firstBindingAt < COLD_START_MS;
  }

  readings(): Gradient2Readings {
    return {
      estimate: this.estimate,
      longRttMs: this.longRttMs,
      shortRttMs: this.shortRttMs,
      lastGradient: this.lastGradient,
      probing: this.probeLimit > 0,
      probes: this.probes,
      slowStart: this.slowStart,
      slowStartDoubt: this.slowStartDoubt,
      exonerations: this.exonerations,
      dismissed: this.dismissed,
    };
  }

  /** A probe past its time ends, samples or not (Limit.tick): its permits may all be held by slow requests. */
  tick(now: number): void {
    if (this.probeLimit > 0 && now - this.lastProbeAt >= this.probeMaxMs) this.endProbe(now);
  }

  onSample(sample: LimitSample, now: number): void {
    const rtt = sample.rttMs;
    // As the origin took it (see followScale): what the baselines learn from.
    const raw = sample.scaleMs !== undefined && sample.classBaseMs !== undefined ? sample.rttMs - sample.scaleMs + sample.classBaseMs : rtt;
    if (!this.judged && this.probeLimit === 0) this.shareUnjudged(sample);
    // A no-load sample: not during a probe (its samples measure it), not a request started
    // before an exoneration (it was measured at the limit before that doubled it, and its
    // queueing would read as the no-load RTT).
    const noLoad =
      this.probeLimit === 0 &&
      !sample.dropped &&
      sample.inflight + (sample.peerInflight ?? 0) <= Math.max(this.min, this.estimate / 2) &&
      now - rtt >= this.exoneratedAt;
    // Its class learns it once the class's requests started before it are back (see settle).
    this.noteQueueing(sample, raw, now);
    const settling = this.noteShare(sample, raw, now, noLoad);
    this.followScale(sample);
    this.syncLong();
    if (sample.inflight >= Math.floor(this.estimate)) {
      if (this.firstBindingAt === undefined || now - this.lastBindingAt >= RELEARN_AFTER_IDLE_MS) this.firstBindingAt = now;
      this.lastBindingAt = now;
    }
    if (this.probeLimit > 0) {
      if (sample.dropped) this.probeDrops++;
      if ((sample.hostDelayMs ?? 0) > this.probeHostDelayMs) this.probeHostDelayMs = sample.hostDelayMs ?? 0;
      const demand = (sample.originInflight ?? sample.inflight) + (sample.waiting ?? 0);
      if (demand > this.probeMaxDemand) this.probeMaxDemand = demand;
      // Only requests started at the probe's concurrency measure the no-load RTT.
      if (!sample.dropped && sample.inflight <= this.probeLimit) {
        const k = sample.stratum ?? -1;
        const st = this.probeStrata.get(k);
        if (st === undefined) this.probeStrata.set(k, { sum: raw, sq: raw * raw, count: 1, share: sample.stratumShare ?? 0, starts: [now - raw], raws: [raw] });
        else {
          st.sum += raw;
          st.sq += raw * raw;
          st.count++;
          st.share = sample.stratumShare ?? 0;
          st.starts.push(now - raw);
          st.raws.push(raw);
        }
        if (++this.probeCount >= (this.probeCold ? Math.min(MIN_BASELINE_SAMPLES, this.probeSamples) : this.probeSamples)) this.endProbe(now);
      }
      // A probe that cannot collect its samples (requests started before it still hold the
      // permits) must not hold the limit down: it ends after PROBE_MAX_MS with what it has.
      if (this.probeLimit > 0 && now - this.lastProbeAt >= this.probeMaxMs) this.endProbe(now);
      return;
    }
    if (noLoad) {
      this.longCount++;
      if (!settling) this.learnBaseline(sample, raw);
      this.lastNoLoadAt = now;
    }
    this.lastNoLoadAt ??= now;
    // Only while the limit binds: a probe costs a few round trips at a quarter of the
    // concurrency, and a limit that does not bind constrains nothing to re-measure for. With
    // several gateways the others' requests keep ours from being no-load samples, and a fleet
    // lightly used probed every 30 s (review).
    if (now - this.lastNoLoadAt >= this.probeIntervalMs && this.binds(now)) {
      this.startProbe(now);
      return;
    }
    if (this.windowSamples === 0) this.windowStartAt = now;
    this.windowSamples++;
    const hostDelay = sample.hostDelayMs ?? 0;
    if (hostDelay > this.windowHostDelayMs) this.windowHostDelayMs = hostDelay;
    const k = sample.stratum ?? -1;
    if (k < 0) this.windowCoverage = 1;
    else if (!this.windowShares.has(k)) this.windowCoverage += sample.stratumShare ?? 0;
    if (k >= 0) this.windowShares.set(k, sample.stratumShare ?? 0);
    // A dropped request's round trip means nothing (a timeout's is the timeout).
    if (sample.dropped) this.windowDrops++;
    else {
      const n = this.windowRttCount++;
      const j = n < WINDOW_RESERVOIR ? n : Math.floor(Math.random() * (n + 1));
      if (j < WINDOW_RESERVOIR) {
        this.windowRtts[j] = rtt;
        this.windowRaws[j] = raw;
        this.windowStrata[j] = k;
      }
    }
    if (sample.inflight > this.windowMaxInflight) this.windowMaxInflight = sample.inflight;
    const atOrigin = sample.originInflight ?? sample.inflight;
    const total = atOrigin + (sample.peerInflight ?? 0);
    if (total > this.windowMaxTotalInflight) this.windowMaxTotalInflight = total;
    const demand = atOrigin + (sample.waiting ?? 0);
    if (demand > this.windowMaxDemand) this.windowMaxDemand = demand;
    // When the request started, from its round trip as read on the scale (a 60 ms page read as
    // 38 ms seems to start 22 ms later; review). Taken from the raw round trip instead, a model
    // of a 150 ms page mix refused 2.2 times as many requests: the rules that read these were
    // tuned on this.
    if (now - rtt < this.windowFirstStartAt) this.windowFirstStartAt = now - rtt;
    if (now - rtt > this.windowLastStartAt) this.windowLastStartAt = now - rtt;
    if (sample.inflight >= Math.floor(this.estimate)) this.windowAtLimit++;
    // In slow start a window lasts two no-load round trips: the first completions after a step
    // are the requests that found a free slot, and a window closed on them alone would miss
    // the ones waiting behind them and step again.
    const span = Math.max(this.minWindowMs, this.shortRttMs ?? this.longRttMs ?? 0, this.slowStart ? 2 * (this.longRttMs ?? 0) : 0);
    // And it waits, up to COVERAGE_WAIT_SPANS of that, to hear from the classes that make up
    // most of the traffic (see WINDOW_COVERAGE).
    const lasted = now - this.windowStartAt;
    if (
      this.windowSamples >= this.minWindowSamples &&
      lasted >= span &&
      (this.windowCoverage >= WINDOW_COVERAGE || lasted >= Math.min(COVERAGE_WAIT_MAX_MS, COVERAGE_WAIT_SPANS * span))
    )
      this.closeWindow(now);
  }

  /**
   * Baselines. A site's endpoints do not cost the same, and the no-load samples that reach the
   * long-term RTT come in no fixed proportion: a fresh gateway's first ones are its quickest
   * endpoint's (10-16 ms API calls come back while the 100-250 ms pages started with them are
   * still out), and their plain mean, the pages' samples clipped at twice it, read 52-62 ms for
   * a mix whose pages are seven requests in ten. Every window then read as a queue, and once
   * the limit had climbed to the clients' demand it sank again: half of 50 clients' requests
   * refused at an origin with room for any number (a model of the normal-day bench with
   * `--page-ms 100-250 --page-share 0.7`); and a window that happened to hold only pages read
   * as a queue against any mean of the mix. So each latency class keeps its own no-load round
   * trip (an EWMA of its no-load samples, clipped at twice it, as the long-term RTT was; its
   * first round trips' mean, less the wait in the origin's queue (noteQueueing), until three
   * no-load samples stand for it: see classRawMs); the
   * long-term RTT is their share-weighted mean plus an offset that holds what probes (which
   * measure each class anew and reset it), exonerations and the drift rule learned; and a
   * window is judged against the baselines of the classes it holds, weighted as its trimmed
   * mean weighs them (a class with none counts at the long-term RTT). Samples of no class are
   * one class: the long-term RTT is then exactly what it was.
   */
  private learnBaseline(sample: LimitSample, rtt: number): void {
    const k = sample.stratum ?? -1;
    let b = this.baselines.get(k);
    if (b === undefined) {
      if (this.baselines.size >= MAX_BASELINES) this.forgetLeastShared();
      b = { ms: rtt - this.offset, variance: 0, n: 0, share: k < 0 ? 1 : (sample.stratumShare ?? 0), provisional: 0, firstMs: 0, firstVariance: 0, base: undefined, settling: undefined };
      this.baselines.set(k, b);
    }
    this.learnNoLoad(b, rtt);
  }

  /** One no-load round trip of a class (see learnBaseline), as the origin took it. */
  private learnNoLoad(b: Baseline, rtt: number): void {
    b.n++;
    const alpha = Math.max(this.longAlpha, 1 / b.n);
    const own = b.ms + this.offset;
    const clipped = b.n > MIN_BASELINE_SAMPLES && rtt > LONG_CLIP * own ? LONG_CLIP * own : rtt;
    b.ms += (clipped - own) * alpha;
    b.variance = (1 - alpha) * (b.variance + alpha * (clipped - own) * (clipped - own));
    // The class learns against the long-term RTT as the drift rule left it, so a no-load
    // sample measures that one: the measured offset follows it at the long-term rate. Kept
    // apart, the measured RTT stood at the true one plus every drift move so far (one quick
    // window, then 300 no-load samples at 100 ms: 125.6 against 99.9), and ordinary windows
    // at the no-load RTT counted as far quicker than it (review).
    this.measuredOffset += (this.offset - this.measuredOffset) * this.longAlpha;
    this.syncLong();
  }

  /**
   * The latest share of a sample's class, for the weights (see Baselines); and the mean of a
   * class's first PROVISIONAL_SAMPLES round trips, however loaded (less the queue's wait when
   * they are no no-load samples: noteQueueing), which stands for its no-load
   * round trip until MIN_BASELINE_SAMPLES no-load samples do (see classMs): a class first seen
   * under load (WordPress's API calls behind its pages at a restart), counted at the long-term
   * RTT instead, read against whatever the other classes take; and one no-load page of 113 ms,
   * the quickest of 100-250 ms pages, read every later window of pages as a queue, the limit
   * sank from 8 to 4 and half of 25 clients' requests were refused until a probe 11 s later (the
   * model of the normal-day bench with `--page-ms 100-250 --page-share 0.7`).
   */
  private noteShare(sample: LimitSample, raw: number, now: number, noLoad: boolean): boolean {
    const k = sample.stratum;
    if (k === undefined || k < 0) return false;
    const share = sample.stratumShare ?? 0;
    // The other classes' shares, last told with their own samples, make up the rest: a class
    // seen first, at a share of 1, and not since (API calls behind a fresh gateway's pages)
    // weighed as much as the pages in the long-term RTT for seconds.
    let others = 0;
    for (const [j, o] of this.baselines) if (j !== k && j >= 0) others += o.share;
    if (others > 1 - share) {
      const scale = Math.max(0, 1 - share) / others;
      for (const [j, o] of this.baselines) if (j !== k && j >= 0) o.share *= scale;
    }
    let b = this.baselines.get(k);
    if (b !== undefined) b.share = share;
    const settledMs = sample.classSettledMs;
    if (sample.dropped || (settledMs === undefined && b !== undefined && b.provisional >= PROVISIONAL_SAMPLES)) return false;
    if (b === undefined) {
      if (this.baselines.size >= MAX_BASELINES) this.forgetLeastShared();
      b = { ms: 0, variance: 0, n: 0, share, provisional: 0, firstMs: 0, firstVariance: 0, base: undefined, settling: undefined };
      this.baselines.set(k, b);
    }
    if (settledMs !== undefined) {
      const st = (b.settling ??= { taken: b.provisional >= PROVISIONAL_SAMPLES ? undefined : [], waiting: [] });
      if (st.taken !== undefined || noLoad) {
        const w = st.waiting;
        // (`first` is read only while its first round trips are taken)
        const e = { startedAt: now - raw, raw, first: st.taken !== undefined ? this.firstRoundTrip(raw, noLoad, now) : raw - this.offset, noLoad };
        let i = w.length;
        w.push(e);
        for (; i > 0 && w[i - 1]!.startedAt > e.startedAt; i--) w[i] = w[i - 1]!;
        w[i] = e;
      }
      this.settle(b, now - settledMs);
      return noLoad;
    }
    b.provisional++;
    const alpha = 1 / b.provisional;
    const d = this.firstRoundTrip(raw, noLoad, now) - b.firstMs;
    b.firstMs += d * alpha;
    b.firstVariance = (1 - alpha) * (b.firstVariance + alpha * d * d);
    // Until its first no-load sample, it is the baseline (a re-base keeps it as one).
    if (b.n === 0) {
      b.ms = b.firstMs;
      b.variance = b.firstVariance;
    }
    return false;
  }

  /**
   * A class learns its round trips in the order their requests started, each once every request
   * of the class started earlier has come back (`settledBefore`, the earliest start still out:
   * LimitSample.classSettledMs): its first PROVISIONAL_SAMPLES (firstMs) and its no-load ones.
   * In the order they come back, the first are the quickest of the requests then out: a fresh
   * gateway's eight permits held pages of 100-250 ms that returned their 120-140 ms ones first,
   * the pages stood at 131 ms (first round trips) or 144 ms (four no-load ones) where they
   * average 175 ms, slow start read their chance spread as a queue in its first windows, and
   * the limit then climbed from 8 by about one a second while 100 clients waited (the
   * normal-day bench with `--page-ms 100-250 --page-share 0.7`, one run in four; the model, 3
   * draws in 40, 46, 64 and 2 % of the fast requests refused). Until one is taken, firstMs is of those come back (the quickest, as before);
   * past SETTLE_WAITING_MAX come back while one request is still out (a hung one), the
   * earliest go. A class of no requests at once settles each at once, as before.
   */
  private settle(b: Baseline, settledBefore: number): void {
    const st = b.settling!;
    const w = st.waiting;
    while (w.length > 0 && (w[0]!.startedAt < settledBefore || w.length > SETTLE_WAITING_MAX)) {
      const e = w.shift()!;
      if (st.taken !== undefined && st.taken.length < PROVISIONAL_SAMPLES) st.taken.push(e.first);
      if (e.noLoad && e.startedAt >= this.exoneratedAt) this.learnNoLoad(b, e.raw);
    }
    if (st.taken !== undefined) {
      // (a few each, and only while the class is new)
      const of = st.taken.length > 0 ? st.taken : w.map((e) => e.first);
      if (of.length > 0) {
        let mean = 0;
        for (const x of of) mean += x;
        mean /= of.length;
        let variance = 0;
        for (const x of of) variance += (x - mean) * (x - mean);
        b.firstMs = mean;
        b.firstVariance = variance / of.length;
        b.provisional = Math.min(of.length, PROVISIONAL_SAMPLES);
      }
      if (st.taken.length >= PROVISIONAL_SAMPLES) st.taken = undefined;
    }
    // Until its first no-load sample, its first round trips are the baseline.
    if (b.n === 0) {
      b.ms = b.firstMs;
      b.variance = b.firstVariance;
    }
  }

  /**
   * A class first seen under load. Its first round trips stand for its no-load one until no-load
   * samples do (noteShare), and in a crowd none comes: a flash crowd's uncacheable classes
   * (`/account`, POSTs) were first seen while slow start took the origin to 18 in flight and
   * stood at 70 and 119 ms for an origin that answers each in 50 ms; as the cache took the
   * pages' fills away they became most of the origin's traffic, the long-term RTT (their
   * share-weighted mean with the pages' 58 ms) drifted to 94 ms, and the limit settled at 17-19
   * for 8 slots (traced; the x50 bench's all-success p99 175-198 ms, its target 150). Queueing in
   * the origin adds the same wait to every class, so each class with a baseline keeps the wait
   * its round trips show beyond it (an EWMA, QUEUEING_ALPHA; forgotten after QUEUEING_MEMORY_MS
   * unheard, and whenever the offset or the baselines are re-based), and the least of those
   * heard from lately is the queue's (queueWait): one class's own spread (a report taking 9 s
   * where it takes 5 on average) is not a queue the others wait in. (The wait holds the
   * gateway's own delay too, as the new class's round trip does.) A new class's round trip
   * that is no no-load sample (more than half the limit in flight at its start) is taken less
   * that wait beyond RTT_NOISE_MS (lessQueueing). Not only at the limit: in the crowd above, the
   * POSTs' first round trip came as slow start stood at 12 with 11 at the origin. What is left
   * of a crowd's queue in them (each request's wait is not the EWMA's) still counts until
   * three no-load samples stand for the class: 67-83 ms against its 51-55 (traced).
   */
  private noteQueueing(sample: LimitSample, raw: number, now: number): void {
    if (sample.dropped) return;
    const b = this.baselines.get(sample.stratum ?? -1);
    if (b === undefined || b.n < MIN_BASELINE_SAMPLES) return;
    const wait = raw - this.offset - b.ms;
    b.wait = b.wait === undefined || now - (b.waitAt ?? -Infinity) > QUEUEING_MEMORY_MS ? wait : b.wait + (wait - b.wait) * QUEUEING_ALPHA;
    b.waitAt = now;
  }

  /**
   * The wait in the origin's queue now, the least that the classes with a baseline heard from
   * lately show (see noteQueueing), and the quickest of their no-load round trips (less the
   * offset); undefined without one.
   */
  private queueWait(now: number): QueueWait | undefined {
    let wait = Infinity;
    let quickest = Infinity;
    for (const b of this.baselines.values())
      if (b.wait !== undefined && now - (b.waitAt ?? -Infinity) <= QUEUEING_MEMORY_MS) {
        wait = Math.min(wait, b.wait);
        quickest = Math.min(quickest, b.ms);
      }
    return wait === Infinity ? undefined : { wait, quickest };
  }

  /** A round trip (as the origin took it) as a new class's first round trips take it: a no-load sample waited in no queue (see noteQueueing). */
  private firstRoundTrip(raw: number, noLoad: boolean, now: number): number {
    return lessQueueing(raw - this.offset, noLoad ? undefined : this.queueWait(now));
  }

  /** The waits are read against the offset and the baselines: a re-base voids them. */
  private forgetWaits(): void {
    for (const b of this.baselines.values()) b.wait = undefined;
  }

  private forgetLeastShared(): void {
    let least: number | undefined;
    let leastShare = Infinity;
    for (const [k, b] of this.baselines) if (b.share < leastShare) [least, leastShare] = [k, b.share];
    if (least !== undefined) this.baselines.delete(least);
  }

  /** The classes' no-load round trips weighted by their shares (by count when no share is known); undefined without any. */
  private mixBaseline(): number | undefined {
    let sum = 0;
    let weight = 0;
    let plain = 0;
    for (const b of this.baselines.values()) {
      sum += b.share * this.classMs(b);
      weight += b.share;
      plain += this.classMs(b);
    }
    if (this.baselines.size === 0) return undefined;
    return weight > 0 ? sum / weight : plain / this.baselines.size;
  }

  /** longRttMs and measuredLongRttMs from the baselines and the offsets. */
  private syncLong(): void {
    const mix = this.mixBaseline();
    if (mix === undefined) return;
    this.longRttMs = Math.max(0.1, mix + this.offset);
    this.measuredLongRttMs = Math.max(0.1, mix + this.measuredOffset);
  }

  /**
   * Moves the long-term RTT to `ms` by its offset (a rebase, the drift rule), the measured one
   * too unless `driftOnly`. Only once there is one: it comes from a baseline (syncLong), and
   * baselines are never all forgotten (forgetLeastShared makes room for a new one).
   */
  private moveLong(ms: number, driftOnly = false): void {
    const long = this.longRttMs!;
    this.offset += ms - long;
    this.forgetWaits();
    if (!driftOnly) this.measuredOffset += ms - (this.measuredLongRttMs ?? long);
    this.syncLong();
  }

  /**
   * The standard error of a window's mean round trip less its baseline (see NOISE_SE), from each
   * class's no-load variance (its baseline's): with classes weighed by share (`stratified`),
   * Σ w² σ² (1 / n + 1 / m) over the window's classes (w its weight, n its count in the window,
   * m the samples its baseline rests on: three pages of 100-250 ms put it anywhere within
   * ±50 ms); else σ² (1 / n + 1 / m) of the one class the window holds. 0 when no variance is known, or the samples name no class.
   */
  private windowNoise(n: number, stratified: boolean): number {
    if (stratified) {
      let total = 0;
      for (const k of STRATUM_COUNTS.keys()) total += this.windowShares.get(k) ?? 0;
      if (!(total > 0)) return 0;
      let v = 0;
      for (const [k, count] of STRATUM_COUNTS) {
        const b = this.baselines.get(k);
        if (b === undefined) continue;
        const w = (this.windowShares.get(k) ?? 0) / total;
        v += w * w * classVariance(b) * (1 / count + 1 / Math.max(1, b.n, b.provisional));
      }
      return Math.sqrt(v);
    }
    if (this.baselines.size === 0 || n === 0) return 0;
    const k = this.windowStrata[0]!;
    // Samples of no class: an algorithm told nothing of the endpoint mix allows for none.
    if (k < 0) return 0;
    for (let i = 1; i < n; i++) if (this.windowStrata[i] !== k) return 0;
    const b = this.baselines.get(k);
    return b === undefined ? 0 : Math.sqrt(classVariance(b) * (1 / n + 1 / Math.max(1, b.n, b.provisional)));
  }

  /**
   * Slow start's 80th percentile of a window whose samples all name their classes (`base`:
   * what its classes read with nobody queueing; undefined for a window with samples of no
   * class): the window's baseline plus the 80th percentile of its round trips' residuals, each
   * less its own class's baseline (share-weighted, as stratifiedTrimmedMean weighs them), less
   * the part of that percentile the classes' own no-load spread makes (SPREAD_Z of each class's
   * standard deviation, share-weighted). The
   * mix's plain 80th percentile is a page's while its mean is the mix's: where 100-250 ms pages
   * are seven requests in ten beside 5-20 ms API calls, every window read 30-50 % past its
   * allowance, the first window after a fresh gateway's first probe ended slow start, and the
   * limit climbed from 8 by about 2.5 a second while 100 clients waited (the normal-day bench
   * with `--page-ms 100-250 --page-share 0.7`). Queueing in the origin adds the same wait to
   * every class, so it still moves the residuals in full. With nobody queueing it reads near
   * `base`.
   */
  private classPercentile(n: number, base: number): number | undefined {
    const counts = CLASS_COUNTS;
    counts.clear();
    for (let i = 0; i < n; i++) {
      const k = this.windowStrata[i]!;
      if (k < 0) return undefined;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    let total = 0;
    for (const k of counts.keys()) total += this.windowShares.get(k) ?? 0;
    if (n === 0 || !(total > 0)) return undefined;
    const long = this.longRttMs ?? base;
    let own = 0;
    const order = ORDER.subarray(0, n);
    for (let i = 0; i < n; i++) {
      const b = this.baselines.get(this.windowStrata[i]!);
      RESIDUALS[i] = this.windowRtts[i]! - (b === undefined ? long : this.classMs(b) + this.offset);
      order[i] = i;
    }
    for (const k of counts.keys()) {
      const b = this.baselines.get(k);
      if (b === undefined) continue;
      own += ((this.windowShares.get(k) ?? 0) / total) * Math.min(Math.sqrt(classVariance(b)), Math.max(0, this.classMs(b) + this.offset));
    }
    order.sort((a, b) => RESIDUALS[a]! - RESIDUALS[b]!);
    let cum = 0;
    let p80 = RESIDUALS[order[0]!]!;
    for (const i of order) {
      const k = this.windowStrata[i]!;
      const w = (this.windowShares.get(k) ?? 0) / total / counts.get(k)!;
      if (w === 0) continue;
      if (cum < 0.8) p80 = RESIDUALS[i]!;
      cum += w;
    }
    return base + p80 - SPREAD_Z * own;
  }

  /**
   * What a window holding these classes (stratum -> share, as its trimmed mean weighs them)
   * would read with nobody queueing: their baselines so weighted, a class with none at the
   * long-term RTT, plus the offset (see Baselines); a window of one class, that class's. The
   * long-term RTT for a window of several classes not weighed by share, or of none.
   */
  private windowBaseline(shares: ReadonlyMap<number, number>, stratified: boolean): number | undefined {
    const long = this.longRttMs;
    if (long === undefined || shares.size === 0 || this.baselines.size < 2 || (!stratified && shares.size > 1)) return long;
    let sum = 0;
    let weight = 0;
    for (const [k, share] of shares) {
      const b = this.baselines.get(k);
      sum += share * (b === undefined ? long : this.classMs(b) + this.offset);
      weight += share;
    }
    return weight > 0 ? sum / weight : long;
  }

  /** windowBaseline for a window read class by class, with what probes measured and never the drift rule's moves (measuredLongRttMs). */
  private measuredBaseline(shares: ReadonlyMap<number, number>): number {
    return (this.windowBaseline(shares, true) ?? 0) - this.offset + this.measuredOffset;
  }

  /**
   * The Limiter reads samples on one scale once it knows two latency classes (LimitSample.scaleMs):
   * a sample of a class is read as `rtt - base(class) + scale`, where base is the class's no-load
   * round trip as the Limiter knows it (LimitSample.classBaseMs), and the scale moves as the
   * classes' shares and bases do. The baselines here learn round trips as the origin took them
   * (the sample read back: `rttMs - scaleMs + classBaseMs`), and a class whose samples are read
   * on the scale is judged on it (classMs): its baseline less the base it was last read against,
   * plus the scale now. The Limiter's base for a class is the least of its first samples, then
   * creeps toward their median; 100-250 ms pages whose first three included one of 110 ms read
   * 65 ms above the scale for as long as the limit bound (no no-load samples came to move it).
   * Setting every class's baseline to the scale when the first sample was read on it (as
   * before) read such a window as a queue; and it set classes whose samples were still read as
   * they were (fewer than the Limiter's LATENCY_CLASS_SAMPLES no-load samples) to the scale too.
   */
  private followScale(sample: LimitSample): void {
    const b = this.baselines.get(sample.stratum ?? -1);
    if (sample.scaleMs === undefined || sample.classBaseMs === undefined) {
      // Read as it is again (the Limiter forgot the other classes).
      if (b !== undefined) b.base = undefined;
      return;
    }
    this.scaleMs = sample.scaleMs;
    if (b !== undefined) b.base = sample.classBaseMs;
  }

  /**
   * Puts the window's round trips on the scale as it stands now, the one its classes are judged
   * on (classMs): each as the origin took it, less its class's base, plus the scale, or as it
   * is for a class not read on the scale. Kept as they came, a window held a page's 70 ms taken
   * before two classes were known beside its baseline on the scale (38 ms) and read a queue: at
   * a fresh start slow start ended at 8 in the quiet before a crowd (2 model draws of 100; in
   * one, 1 598 of the crowd's requests were refused while the limit climbed by one a window).
   * The scale and the bases also move a little with each sample (review: entries off by up to
   * 24 ms).
   */
  private readWindow(kept: number): void {
    const scale = this.scaleMs;
    for (let i = 0; i < kept; i++) {
      const b = this.baselines.get(this.windowStrata[i]!);
      if (b === undefined) continue;
      this.windowRtts[i] = this.windowRaws[i]! + (b.base !== undefined && scale !== undefined ? scale - b.base : 0);
    }
  }

  /** A class's no-load round trip as its windows are judged (see followScale and classRawMs), less the offset. */
  private classMs(b: Baseline): number {
    const raw = classRawMs(b);
    return b.base !== undefined && this.scaleMs !== undefined ? raw - b.base + this.scaleMs : raw;
  }

  /**
   * Several gateways in front of one origin each start at `initial`, and a limit that has never
   * bound keeps it however long the site stays quiet: three gateways' 8 are 24 for an origin one
   * gateway would send 8, the first seconds of a crowd took the origin past its capacity
   * whatever they told each other, and an origin ten times slower on a quiet day was first seen
   * at 24 in flight, so its queue read as its new no-load round trip and each limit doubled
   * from 8 (48 for 8 slots, in a model; one gateway: 16). So until a window has judged it
   * (judged), when this gateway's requests at the origin and the others' (LimitSample.peerInflight)
   * together exceed `initial`, the limit is at most its share of `initial` by its share of those
   * requests (at least `min`), and its peak with it: the fleet's unjudged limits add up to about
   * one gateway's, and slow start and the gradient go on from there as for one gateway. One
   * gateway, or a fleet whose requests stay within `initial`: nothing changes.
   */
  private shareUnjudged(sample: LimitSample): void {
    const peers = sample.peerInflight ?? 0;
    if (peers <= 0) return;
    const own = sample.originInflight ?? sample.inflight;
    const total = own + peers;
    if (total <= this.initial) return;
    const share = Math.max(this.min, (this.initial * own) / total);
    if (share >= this.estimate) return;
    this.estimate = share;
    this.peakEstimate = share;
  }

  private closeWindow(now: number): void {
    let gradient = 0.5;
    // Slow start's test: the window's 80th percentile against the same allowance. The trimmed
    // mean hides the first requests queueing in the origin (4 of 12 waiting behind 8 slots
    // moved it by a tenth, and slow start ran a crowd's origin to 25 in flight); the percentile
    // sees them once a window lasts long enough to hold them (two round trips, above).
    let slowStartGradient = 0.5;
    let p80 = 0;
    let spread = 1;
    let suspicious = false;
    /** The origin's own round trip, re-based without a probe (see Exoneration). */
    let rebaseMs: number | undefined;
    let unexplained = false;
    /** What this window's classes read with nobody queueing, before the drift rule moved it. */
    let windowBase: number | undefined;
    /** Its 80th percentile is read class by class (classPercentile). */
    let classRead = false;
    /** The allowance for a window's chance spread (see NOISE_SE). */
    let noise = 0;
    /** What queueing behind this window's requests could make of a round trip, ms (see Exoneration). */
    let bound = 0;
    if (this.binding()) this.judged = true;
    /** The window was far quicker than the long-term RTT (the drift rule below). */
    let drifted = false;
    // Drops (timeouts, 503s): the origin says it is overloaded; they cut the limit as always,
    // and no exoneration counts across them (nor across a window of drops alone).
    if (this.windowDrops > 0 || this.windowRttCount === 0) {
      this.unexplainedWindows = 0;
      this.jumpWindows = 0;
    }
    if (this.windowRttCount > 0) {
      const kept = Math.min(this.windowRttCount, WINDOW_RESERVOIR);
      this.readWindow(kept);
      const stratified = stratifiedTrimmedMean(this.windowRtts, this.windowStrata, kept, this.windowShares);
      // (before trimmedMean sorts the round trips in place)
      noise = NOISE_SE * this.windowNoise(kept, stratified !== undefined);
      const trimmed = stratified ?? trimmedMean(this.windowRtts, kept);
      const shortRtt = trimmed.mean;
      p80 = trimmed.p80;
      spread = trimmed.p20 > 0 ? trimmed.p80 / trimmed.p20 : 1;
      this.shortRttMs = shortRtt;
      // What this window's classes read with nobody queueing (see Baselines).
      let base = this.windowBaseline(this.windowShares, stratified !== undefined);
      windowBase = base;
      // Slow start's percentile, of a window whose samples name their classes: each class's own
      // spread is not a queue (see classPercentile).
      const own = base === undefined ? undefined : this.classPercentile(kept, base);
      if (own !== undefined) {
        p80 = own;
        classRead = true;
      }
      if (base !== undefined) {
        // One quick window is the endpoint mix; DRIFT_WINDOWS in a row are the origin, and a
        // probe measures it. After a re-base (see Exoneration) one is enough: the origin that
        // got slow is quick again. Counted against what was measured, not what the rule below
        // moved it to: each move halves the gap, and the moved RTT stops short of windows that
        // hold a queue. Against it, a 500 ms round trip moved to 168 and 205 ms after an origin
        // got ten times quicker, stood there against windows of 90-150 ms (the window's
        // allowance for its chance spread between them), no probe came, and the limit climbed
        // past the origin's slots until the periodic one (the fleet bench's gateways, 10-13
        // each for their share of 8 slots). Only while the limit binds: below it no-load
        // samples keep the round trip measured (a mix of 5-20 ms and 100-250 ms requests of no
        // class, the limit far above the clients, was probed every 3-5 s; review).
        if (shortRtt < DRIFT_RATIO * (base - this.offset + this.measuredOffset) - noise) {
          if ((++this.driftWindows >= DRIFT_WINDOWS || this.rebased) && this.binds(now)) suspicious = true;
        } else this.driftWindows = 0;
        if (shortRtt < DRIFT_RATIO * base - noise) {
          drifted = true;
          const moved = (shortRtt - base) * 0.5;
          this.moveLong(this.longRttMs! + moved, true);
          base += moved;
        }
        const allowance = this.tolerance * base + this.slack(base) + noise;
        gradient = shortRtt > 0 ? allowance / shortRtt : 1;
        slowStartGradient = p80 > 0 ? allowance / p80 : 1;
        if (this.windowDrops > 0) {
          // (the counts were reset above)
        } else if (gradient < JUMP_GRADIENT && trimmed.p50 > (bound = Math.max(1, this.windowMaxTotalInflight) * allowance)) {
          // Round trips longer than the origin's requests (ours with the slow lane's, and the
          // other gateways') queued one behind another would make, for most of the window (its median: the
          // answers an origin's pause released at once are not most of a window that lasts a
          // round trip of them, and the quick answers after it are): not queueing; no cut, no
          // evidence, and the second such window in a row is the origin's new round trip (see
          // Exoneration).
          unexplained = true;
          gradient = 1;
          slowStartGradient = 1;
          this.jumpWindows = 0;
          // Far past the bound, with round trips enough to rule out a chance few: at once.
          const startSpan = this.windowLastStartAt - this.windowFirstStartAt;
          const clear =
            trimmed.p50 > UNEXPLAINED_CLEAR * bound &&
            this.windowRttCount >= CLEAR_MIN_SAMPLES &&
            spread <= CLEAR_MAX_SPREAD &&
            startSpan >= CLEAR_MIN_START_SPAN * trimmed.p50 &&
            now - this.windowStartAt >= startSpan / 2;
          if (++this.unexplainedWindows >= JUMP_WINDOWS || clear) rebaseMs = shortRtt;
        } else {
          this.unexplainedWindows = 0;
          // A jump: round trips past twice the allowance, in a window at the limit. The second
          // in a row has a probe tell queueing from an origin slow on its own (see Exoneration).
          if (gradient < JUMP_GRADIENT && this.windowMaxInflight >= Math.floor(this.estimate)) {
            if (++this.jumpWindows >= JUMP_WINDOWS) suspicious = true;
          } else this.jumpWindows = 0;
        }
      } else {
        gradient = 1; // nothing to compare with yet; the first probe will tell
        slowStartGradient = 1;
      }
    }
    // A window that did not bind, at a concurrency the origin answered clear a moment ago, says
    // nothing (see Windows that did not bind); a window judged clear is remembered.
    if (windowBase !== undefined && this.windowDrops === 0 && !unexplained) {
      if (gradient >= 1) this.noteClear(now);
      else if (!this.binding() && this.windowMaxTotalInflight <= this.clearInflight(now)) {
        this.dismissed++;
        if (this.shortRttMs !== undefined && this.shortRttMs >= DISMISSED_DOUBLED * windowBase) this.lastDismissedDoubledAt = now;
        this.lastWindowMs = now - this.windowStartAt;
        this.resetWindow();
        return;
      }
    }
    if (this.windowDrops > 0) gradient = Math.min(gradient, 1 - this.windowDrops / this.windowSamples);
    if (gradient < 1) this.lastQueueingAt = now;
    if (this.windowDrops > 0) this.lastDropsAt = now;
    this.recentWindowAt[this.recentWindowNext] = now;
    this.recentWindowQueued[this.recentWindowNext] = gradient < 1 ? 1 : 0;
    this.recentWindowNext = (this.recentWindowNext + 1) % EVIDENCE_WINDOWS;
    this.lastWindowMs = now - this.windowStartAt;
    if (unexplained) {
      if (rebaseMs !== undefined) {
        this.unexplainedWindows = 0;
        this.moveLong(rebaseMs);
        for (const b of this.baselines.values()) b.n = Math.max(b.n, MIN_BASELINE_SAMPLES);
        this.longCount = Math.max(this.longCount, MIN_BASELINE_SAMPLES);
        this.lastNoLoadAt = now;
        this.rebased = true;
        const before = this.estimate;
        const peakBefore = this.peakEstimate;
        this.exonerate(now, EXONERATE_GROWTH, this.windowMaxDemand);
        // The doubling is judged in hindsight like a slow-start step: a probe that later finds
        // the origin quick again (a no-load RTT far below this window's) takes it back.
        this.slowStartSteps.push({ p80, slack: this.slack(rebaseMs), before, peakBefore, mix: 0 });
      }
      this.resetWindow();
      return;
    }
    this.judgeStepsInHindsight();
    gradient = clamp(gradient, 0.5, 1);
    this.lastGradient = gradient;
    const measuredAfterStep = this.windowFirstStartAt >= this.slowStartStepAt;
    // After its first step, a window read class by class is judged against the window that made
    // that step, not against the baselines: those rest on a few no-load samples at a fresh start,
    // and four pages of 100-250 ms that happened to take 120-156 ms (a class that averages
    // 175 ms) read a window of pages at 180-250 ms as a queue, slow start ended at 12, and the
    // limit climbed by about one every three windows while 100 clients queued (a quarter of
    // their requests refused; the model of the normal-day bench with `--page-ms 100-250
    // --page-share 0.7`, 1 draw in 40). The first window passed the baselines' test, and a
    // queue that grows step by step past that window's percentile shows here at the same point
    // as it would against baselines that were right.
    // That window and the last step's are single windows too, each with its chance spread (on
    // the real slow-page day, a first window whose 80th percentile read below its own baseline
    // ended slow start at 12 in the next window): their spread, scaled as their percentile is,
    // is allowed for beside this window's (independent, so in quadrature).
    const firstScale = SLOW_START_RISE * ((windowBase ?? 1) / this.slowStartFirstBase);
    const firstBound =
      classRead && this.slowStartFirstP80 !== undefined
        ? firstScale * this.slowStartFirstP80 + RTT_NOISE_MS + Math.hypot(noise, firstScale * this.slowStartFirstNoise)
        : undefined;
    const refScale = SLOW_START_RISE * (classRead || this.slowStartRefClassRead ? (windowBase ?? 1) / this.slowStartRefBase : 1);
    const queued = firstBound !== undefined ? p80 > firstBound : slowStartGradient < SLOW_START_EXIT;
    // Against the window that made the last step (HyStart's delay-increase test): a baseline
    // taken while the gateway and the origin were still cold (a 50 ms origin read 80-100 ms)
    // hides the origin's queueing from the test above. And the spread: a cold start slows every
    // request alike, while queueing behind C slots splits the window in two (the requests that
    // found a slot, and the ones that waited a service time more), which a warming origin's
    // falling round trips cannot hide.
    // Read class by class (classPercentile), a window of the mix holds its classes in chance
    // proportions and a chance few of each: the last step's percentile is taken relative to its
    // window's baseline, both windows' chance spread is allowed for, and the spread test is left
    // out (two windows' 80th over 20th percentiles of 26 samples each, no queueing, differed by
    // a third).
    const riseBound =
      measuredAfterStep && this.slowStartRefP80 !== undefined
        ? refScale * this.slowStartRefP80 + RTT_NOISE_MS + (classRead ? Math.hypot(noise, refScale * this.slowStartRefNoise) : 0)
        : undefined;
    const split = riseBound !== undefined && !classRead && !this.slowStartRefClassRead && spread > SLOW_START_RISE * this.slowStartRefSpread;
    const rose = riseBound !== undefined && p80 > riseBound;
    if (this.slowStart && (queued || this.windowDrops > 0 || rose || split)) {
      // A near verdict on a window read class by class is a doubt (SLOW_START_DOUBT_MARGIN):
      // there the baselines, and so the first step's window, rest on a few no-load samples of
      // each class, and when those were quick the first step's window is quick by selection (it
      // had to pass the baselines' test). 200 streams of pages with no queue at all ended slow
      // start 69 times on one verdict, each by 0-11 % past the bound or with gradients of
      // 0.70-0.80; with the doubt, 18 times. A near verdict is judged again a window later, at
      // the same limit, and a pass then only clears the doubt (below). Not for a single class: a fleet's gateways sharing one origin read
      // gradients of 0.66-0.71 on a real queue, and while one doubted the others stepped (the
      // model fleet's peak 16 -> 26). A drop, or the spread's split, is never a doubt.
      const near =
        this.windowDrops === 0 &&
        !split &&
        classRead &&
        (!queued || (firstBound !== undefined ? p80 <= SLOW_START_DOUBT_MARGIN * firstBound : slowStartGradient * SLOW_START_DOUBT_MARGIN >= SLOW_START_EXIT)) &&
        (!rose || p80 <= SLOW_START_DOUBT_MARGIN * riseBound!);
      if (near && !this.slowStartDoubt) {
        this.slowStartDoubt = true;
        this.resetWindow();
        return;
      }
      this.slowStart = false;
      this.slowStartDoubt = false;
    } else if (this.slowStartDoubt) {
      // A window that passes after a doubt clears it, and makes no step either: a near verdict
      // on a real queue and then a lucky window stepped past the queue (review's model of a
      // crowd on a mix: over 1.5 times the origin's slots in 78 seeds of 100 for 8 slots, 75
      // this way, 69 with no doubt at all). The next window that passes steps.
      this.slowStartDoubt = false;
      this.resetWindow();
      return;
    }
    if (
      this.slowStart &&
      this.longCount >= MIN_BASELINE_SAMPLES &&
      this.windowAtLimit * 2 >= this.windowSamples &&
      measuredAfterStep &&
      // Not against a long-term RTT this window shows to be stale: an origin quick again after
      // a re-base passed the 2 s allowance at 3-5 times its slots.
      !drifted
    ) {
      // Read class by class, the step is judged in hindsight by what it was allowed (the
      // window's chance spread with it, or what the first step's window allowed: see above)
      // over what its classes' baselines say then. Without the spread, a step of pages that
      // passed by it was taken back in the next window; against the long-term RTT, a mix whose
      // API calls' share rose from 29 to 40 % took back a step of the same pages and classes.
      const shares = classRead && windowBase !== undefined ? new Map(this.windowShares) : undefined;
      this.slowStartSteps.push({
        p80,
        slack:
          shares === undefined
            ? this.slack(this.longRttMs ?? 0)
            : (firstBound !== undefined ? SLOW_START_EXIT * firstBound : this.tolerance * windowBase! + this.slack(windowBase!) + noise) -
              this.tolerance * this.measuredBaseline(shares),
        before: this.estimate,
        peakBefore: this.peakEstimate,
        mix: windowBase !== undefined && this.longRttMs !== undefined ? windowBase - this.longRttMs : 0,
        shares,
      });
      this.estimate = clamp(this.estimate * SLOW_START_FACTOR, this.min, this.max);
      this.slowStartStepAt = now;
      this.slowStartRefP80 = p80;
      this.slowStartRefSpread = spread;
      this.slowStartRefBase = windowBase ?? 1;
      this.slowStartRefClassRead = classRead;
      this.slowStartRefNoise = noise;
      if (this.slowStartFirstP80 === undefined && classRead) {
        this.slowStartFirstP80 = p80;
        this.slowStartFirstBase = windowBase ?? 1;
        this.slowStartFirstNoise = noise;
      }
      if (this.estimate > this.peakEstimate) this.peakEstimate = this.estimate;
      this.resetWindow();
      return;
    }

    const target = this.estimate * gradient + this.queueSize(this.estimate);
    let next = this.estimate * (1 - this.smoothing) + target * this.smoothing;
    // Grow only from a window that used the whole limit, with most of its requests started at
    // it: below it the origin's latency says nothing about more concurrency. (Netflix's
    // "inflight >= limit / 2" let a crowd's ramp, with bursts well under the limit, walk the
    // limit up to twice the origin's capacity; and a window that touched the limit in one
    // burst, most of its requests having found a free permit, walked a crowd's limit from 12 to
    // 13.8 for an origin with 8 slots, burst after burst of the ramp.)
    if (!this.binding()) next = Math.min(next, this.estimate);
    this.estimate = clamp(next, this.min, this.max);
    // No baseline yet (a crowd from the first request, or an initial limit far above the
    // origin's capacity): measure one as soon as the limit binds. Not before: a probe runs at a
    // quarter of the limit, and an origin that is only lightly used would just have its
    // requests held back. A few no-load samples from before the crowd are a baseline to start
    // from (the drift rules and the periodic probe correct it later); probing anyway would
    // hold fills back just when a cold cache needs them most.
    if (this.longCount < Math.min(MIN_BASELINE_SAMPLES, this.probeSamples) && this.windowMaxInflight >= Math.floor(this.estimate)) suspicious = true;
    // The limit fell below half its peak since the last probe: the origin got slower, or lost
    // capacity, or the host it shares with the gateway got busy (a 5-20 ms origin read 60 ms
    // while the CPU was saturated), and only a low-concurrency measurement tells which. Meanwhile
    // the windows count as evidence for refusing at arrival, so this probe does not wait for
    // probeMinIntervalMs; it cannot repeat without end, as each one resets the peak.
    // Below two thirds of it when, since the last probe and within the clear memory, a window
    // was set aside whose round trips had doubled (DISMISSED_DOUBLED) at a concurrency the
    // origin answered clear a moment ago (the origin slower on its own, or the host busy):
    // every answer 3x slower on an origin with room held the limit between 7 and 9 of a peak
    // of 13 for 1.5 s, its windows read as queueing, and arrivals were refused against the
    // CoDel target before it reached half (differential bench, seed 4, the limit bound at 13).
    // A crowd's windows set aside are those just after the limit grew (their requests started
    // at the old limit), their round trips a little up, not doubled (review's model: 11-52 a
    // run; a probe on any of them came at 2-4 s of every run from an initial 64).
    let halved = false;
    if (this.estimate > this.peakEstimate) this.peakEstimate = this.estimate;
    else if (this.estimate * 2 < this.peakEstimate) halved = true;
    else if (
      this.estimate * DISMISSED_PROBE_FALL < this.peakEstimate &&
      this.lastDismissedDoubledAt > this.lastProbeAt &&
      now - this.lastDismissedDoubledAt <= Math.max(CLEAR_MEMORY_MS, 4 * this.lastWindowMs)
    )
      halved = true;
    this.resetWindow();
    if (halved) this.startProbe(now, false, true);
    else if (suspicious && now - this.lastProbeAt >= this.probeMinIntervalMs) this.startProbe(now);
  }

  /**
   * Slow start's steps in hindsight. A step claims that the window which made it did not queue
   * in the origin: its 80th-percentile RTT was within the allowance of the no-load RTT known
   * then. At a cold start that RTT rests on a few samples taken while the gateway and the origin
   * were still cold (a 50 ms origin read 70-90 ms), and against it a window with a third of its
   * requests waiting behind the origin's slots passes: a crowd's limit stepped from 12 to 18 for
   * an origin with 8 slots, did not bind again while the crowd ramped up, and let 16-17
   * requests into the origin when the crowd got there. So when the no-load RTT learned since
   * puts that window's 80th percentile past the allowance (the slow-start test), the step is
   * taken back, newest first. Whether that window queued or was only cold cannot be told apart
   * now, so slow start goes on, judged against the no-load RTT it has now: an origin with room
   * steps again at once, one without stops at its first queueing window. Only while slow start
   * is on (the steps are dropped when it ends), and only against the RTT no-load samples and
   * probes measured (measuredLongRttMs), never the drift rule's halfway move after one quick
   * window.
   */
  private judgeStepsInHindsight(): void {
    const long = this.measuredLongRttMs;
    const steps = this.slowStartSteps;
    // Only while slow start is on: once it has ended, the gradient has judged the limit at the
    // origin's real latency, window after window, and a step taken back then would cut a
    // crowd's limit by more than half in one window.
    if (!this.slowStart) steps.length = 0;
    if (long === undefined) return;
    let reverted = false;
    while (steps.length > 0) {
      const step = steps[steps.length - 1]!;
      const base = step.shares === undefined ? long + step.mix : this.measuredBaseline(step.shares);
      if ((this.tolerance * base + step.slack) / step.p80 >= SLOW_START_EXIT) break;
      steps.pop();
      if (step.before < this.estimate) this.estimate = step.before;
      this.peakEstimate = Math.max(step.peakBefore, this.estimate);
      reverted = true;
    }
    if (reverted) this.slowStartRefP80 = this.slowStartFirstP80 = undefined;
  }

  /**
   * The slack a window's round trips get over the long-term RTT: the gateway's own turns
   * (RTT_NOISE_MS), a share of the RTT (RTT_NOISE_RATIO), or the window's measured event-loop
   * delay when that is larger: every sample waited that long for its callback here, and a
   * gateway busy with a burst of new clients read its own lag as an origin slowdown.
   */
  private slack(longRttMs: number): number {
    return Math.max(RTT_NOISE_MS, RTT_NOISE_RATIO * longRttMs, this.windowHostDelayMs);
  }

  /** See Limit.onProbe: set by the Limiter. */
  onProbe: (() => void) | undefined = undefined;
  /** The probe running measures a first baseline (see startProbe). */
  private probeCold = false;
  /** How long the last probe lasted, ms (see joinProbe). */
  private lastProbeMs = 0;

  /**
   * Another gateway in front of the same origin started a probe (see Several gateways): one
   * starts here too, unless one runs, the last one ended within JOIN_MIN_INTERVAL_MS (or
   * JOIN_GAP_PROBES of its lengths), there is no baseline yet (MIN_BASELINE_SAMPLES no-load
   * samples), or this limit is not binding: it has not had every permit in use lately (binds:
   * its requests are not what queues in the origin, and a probe would hold them
   * back for nothing: a normal day's gateway beside a busy one), or only just began to
   * (isColdStart: at a crowd's start a probe holds back the fills a cold cache needs, and a
   * crowd with nothing stale is refused; the fleet then syncs its probes once warm). Not told to
   * the others again.
   */
  joinProbe(now: number): boolean {
    if (this.probeLimit > 0 || this.longCount < MIN_BASELINE_SAMPLES || !this.binds(now) || this.isColdStart(now)) return false;
    // From the end of the last probe, at least JOIN_GAP_PROBES of its lengths: against an origin
    // whose round trips take seconds a probe lasts three of them, and probes joined 5 s apart
    // held a busy limit at a quarter most of the time (review).
    if (now - this.lastProbeAt < Math.max(this.probeMinIntervalMs, JOIN_MIN_INTERVAL_MS, JOIN_GAP_PROBES * this.lastProbeMs)) return false;
    this.startProbe(now, true);
    return true;
  }

  /**
   * Every permit was in use lately: within JOIN_BINDING_MS, or two round trips when they are
   * longer (a request that started at the limit is seen when it ends).
   */
  private binds(now: number): boolean {
    return now - this.lastBindingAt <= Math.max(JOIN_BINDING_MS, 2 * (this.shortRttMs ?? this.longRttMs ?? 0));
  }

  private startProbe(now: number, joined = false, fell = false): void {
    this.probeJumpRttMs = this.jumpWindows >= JUMP_WINDOWS ? this.shortRttMs : undefined;
    this.jumpWindows = 0;
    this.probeMaxMs = Math.min(PROBE_CAP_MS, Math.max(PROBE_MAX_MS, PROBE_RTTS * (this.shortRttMs ?? 0)));
    this.probeLimit = Math.max(this.min, Math.floor(this.estimate / 4));
    this.probeCold = this.longCount < MIN_BASELINE_SAMPLES;
    this.probeLongBeforeMs = fell && !this.probeCold ? this.measuredLongRttMs : undefined;
    this.probeHostDelayMs = 0;
    this.probeCount = 0;
    this.probeDrops = 0;
    this.probeMaxDemand = 0;
    this.probeStrata.clear();
    this.probes++;
    this.lastProbeAt = now;
    this.resetWindow();
    if (!joined) this.onProbe?.();
  }

  private endProbe(now: number): void {
    this.judged = true;
    this.lastProbeMs = now - this.lastProbeAt;
    this.driftWindows = 0;
    let exonerated = false;
    let rose = false;
    if (this.probeCount > 0) {
      // Each class the probe measured has that for its baseline now, and the offset is spent.
      this.offset = 0;
      this.measuredOffset = 0;
      this.forgetWaits();
      // A class whose round trips got quicker while the probe ran: those since (sinceStep).
      for (const [k, st] of this.probeStrata) if (k >= 0) sinceStep(st);
      for (const [k, st] of this.probeStrata) {
        const b = this.baselines.get(k);
        const mean = st.sum / st.count;
        const variance = Math.max(0, st.sq / st.count - mean * mean);
        // (and for its first round trips: a probe's few outweigh them)
        if (b === undefined)
          this.baselines.set(k, {
            ms: mean,
            variance,
            n: st.count,
            share: k < 0 ? 1 : st.share,
            provisional: k < 0 ? 0 : PROVISIONAL_SAMPLES,
            firstMs: mean,
            firstVariance: variance,
            base: undefined,
            settling: undefined,
          });
        else {
          b.ms = b.firstMs = mean;
          b.variance = b.firstVariance = variance;
          if (k >= 0) b.provisional = PROVISIONAL_SAMPLES;
          b.settling = undefined;
          b.n = st.count;
        }
      }
      this.syncLong();
      // Like with like: the measured no-load RTT before (without the drift rule's moves) and
      // now, less the gateway's own delay while the probe ran (a busy host is not the origin).
      const before = this.probeLongBeforeMs;
      const after = this.measuredLongRttMs;
      rose =
        before !== undefined &&
        after !== undefined &&
        this.probeJumpRttMs === undefined &&
        this.probeDrops === 0 &&
        this.probeCount >= Math.min(MIN_BASELINE_SAMPLES, this.probeSamples) &&
        after - this.probeHostDelayMs >= PROBE_ROSE_RATIO * before;
      // On the scale the jump it is compared with was read on (see followScale).
      for (const [k, st] of this.probeStrata) {
        const b = this.baselines.get(k)!;
        st.sum += st.count * (this.classMs(b) - classRawMs(b));
      }
      const measured = probeMean(this.probeStrata);
      this.longCount = this.probeCount;
      this.rebased = false;
      const jumped = this.probeJumpRttMs;
      exonerated =
        jumped !== undefined &&
        this.probeDrops === 0 &&
        this.probeCount >= Math.min(MIN_BASELINE_SAMPLES, this.probeSamples) &&
        measured >= EXONERATE_RATIO * jumped;
    }
    this.probeJumpRttMs = undefined;
    this.probeLongBeforeMs = undefined;
    if (exonerated) this.exonerate(now, 1, this.probeMaxDemand);
    else if (rose) this.forgetQueueing(now);
    this.shortRttMs = undefined;
    this.lastNoLoadAt = now;
    this.lastProbeAt = now;
    this.peakEstimate = this.estimate;
    this.probeLimit = 0;
    this.resetWindow();
  }

  /**
   * The origin is slow on its own (see Exoneration: unexplained windows, or a probe that found
   * the jump in the round trips at a quarter of the concurrency too). The limit goes to
   * `growth` x its peak, or to the `demand` seen (requests at the origin and waiting), up to
   * EXONERATE_DEMAND_CAP x the peak, whichever is more; the windows it left are no evidence of
   * queueing, and slow start tests the concurrency again.
   */
  private exonerate(now: number, growth: number, demand = 0): void {
    this.judged = true;
    this.exonerations++;
    this.exoneratedAt = now;
    const met = Math.min(EXONERATE_DEMAND_CAP * this.peakEstimate, demand);
    this.estimate = clamp(Math.max(this.estimate, growth * this.peakEstimate, met), this.min, this.max);
    this.peakEstimate = this.estimate;
    this.forgetQueueing(now);
  }

  /**
   * The windows read as queueing were judged against a no-load RTT the origin no longer has:
   * they are no evidence, and slow start climbs again from here, its own tests stopping it at
   * the first window that queues against the RTT known now (see Exoneration).
   */
  private forgetQueueing(now: number): void {
    this.lastQueueingAt = -Infinity;
    this.recentWindowQueued.fill(0);
    this.slowStart = true;
    this.slowStartSteps.length = 0;
    this.slowStartRefP80 = this.slowStartFirstP80 = undefined;
    this.slowStartDoubt = false;
    this.slowStartStepAt = now;
  }

  private resetWindow(): void {
    this.windowSamples = 0;
    this.windowRttCount = 0;
    this.windowShares.clear();
    this.windowCoverage = 0;
    this.windowDrops = 0;
    this.windowMaxInflight = 0;
    this.windowMaxTotalInflight = 0;
    this.windowMaxDemand = 0;
    this.windowHostDelayMs = 0;
    this.windowFirstStartAt = Infinity;
    this.windowLastStartAt = -Infinity;
    this.windowAtLimit = 0;
  }
}

/**
 * Mean of the first n values without the slowest floor(n / 5), the slowest value kept (about the
 * 80th percentile) and the 20th percentile; sorts them in place; n >= 1.
 */
function trimmedMean(values: Float64Array, n: number): { mean: number; p20: number; p50: number; p80: number } {
  const kept = n - Math.floor(n / 5);
  const a = values.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < kept; i++) sum += a[i]!;
  return { mean: sum / kept, p20: a[Math.floor(n / 5)]!, p50: a[Math.floor(n / 2)]!, p80: a[kept - 1]! };
}

/** stratifiedTrimmedMean's scratch space (one window at a time, never reentered). */
/**
 * A latency class's no-load round trip (see Baselines), ms less the offset: `ms` and `variance`
 * are an EWMA of its `n` no-load samples; `firstMs` and `firstVariance` those of its first
 * `provisional` round trips, however loaded (see noteShare); `share` its latest share of the
 * traffic.
 */
interface Baseline {
  ms: number;
  variance: number;
  n: number;
  share: number;
  provisional: number;
  firstMs: number;
  firstVariance: number;
  /** The Limiter's no-load round trip for the class when its samples are read on a scale (see followScale). */
  base: number | undefined;
  /** Its round trips waiting to be learned in the order they started, and its first ones taken so far (see settle). */
  settling: Settling | undefined;
  /** The wait its round trips show beyond its no-load one, and when last heard (see noteQueueing). */
  wait?: number | undefined;
  waitAt?: number | undefined;
}

interface Settling {
  /** Its first round trips taken so far, in the order they started (firstMs); undefined once PROVISIONAL_SAMPLES are. */
  taken: number[] | undefined;
  /**
   * Come back, not yet learned: a request of the class started before them is still out. Earliest
   * start first. `first`: the round trip as its first round trips take it (lessQueueing).
   */
  waiting: { startedAt: number; raw: number; first: number; noLoad: boolean }[];
}

/** The weight of each sample in the wait a class with a baseline shows (see noteQueueing). */
const QUEUEING_ALPHA = 0.2;
/** A class's wait not heard of for this long says nothing of the queue now (see noteQueueing). */
const QUEUEING_MEMORY_MS = 1_000;

/** See queueWait. */
interface QueueWait {
  wait: number;
  quickest: number;
}

/**
 * A new class's round trip `ms` (as the origin took it, less the offset) that is no no-load
 * sample, as its first round trips take it (see noteQueueing): less the queue's wait beyond
 * RTT_NOISE_MS. As it is when it was quicker than the wait (it did not wait in that queue:
 * static files an origin's web server answers while its PHP workers are all busy), when the
 * wait is within RTT_NOISE_MS, or without a wait known. And never below the wait itself or the
 * quickest no-load round trip of the classes with a baseline, whichever is less: a round trip
 * just past the wait may not have waited either (one of 75 ms beside a 70 ms wait would stand
 * for 10), and under a queue longer than the classes' own round trips (a crowd's, where slow
 * start took 18 requests to 8 slots of 50 ms: a 62 ms wait) every request waits, and the
 * wait as the floor held the new classes 10-15 ms above the pages' 55 ms.
 */
function lessQueueing(ms: number, queue: QueueWait | undefined): number {
  if (queue === undefined || queue.wait <= RTT_NOISE_MS || ms < queue.wait) return ms;
  return Math.max(Math.min(queue.wait, queue.quickest), ms - (queue.wait - RTT_NOISE_MS));
}

/** At most this many of a class's round trips wait for one still out (see settle); past it, the earliest go. */
const SETTLE_WAITING_MAX = 16;

/**
 * A class's no-load round trip as windows are judged against it: its first round trips' mean
 * while fewer than MIN_BASELINE_SAMPLES no-load samples say otherwise (one or two of them are
 * its quickest answers, not its typical one; see noteShare), its no-load EWMA from then on.
 */
function classRawMs(b: Baseline): number {
  return b.n < MIN_BASELINE_SAMPLES && b.provisional > b.n ? b.firstMs : b.ms;
}

/**
 * The variance that goes with classMs. While the first round trips stand for it and one or two
 * no-load samples say they are not all queueing, theirs (or the no-load samples', the larger)
 * blended with a prior spread of YOUNG_CV of their mean, as if
 * YOUNG_PRIOR_SAMPLES more had shown it: five pages of 100-250 ms that happened to take
 * 120-140 ms spread by a fifth of what the class does, and read every later window of pages as
 * a queue beyond the chance spread (the model of the normal-day bench with `--page-ms 100-250
 * --page-share 0.7`: 9 % of 50 clients' requests refused).
 *
 * Its no-load samples' own, from fewer than SPREAD_PRIOR_UNTIL of them, is blended with that
 * prior as well (never below their own): four pages of 100-250 ms that took 120-156 ms spread
 * by 14 ms where the class spreads by 43, and slow start read a window of pages at 180-250 ms
 * as a queue and ended at 12 while 100 clients waited (the model, 1 draw in 40). A probe's ten
 * samples, or a quiet day's, soon outweigh it.
 */
function classVariance(b: Baseline): number {
  if (!(b.n < MIN_BASELINE_SAMPLES && b.provisional > b.n)) {
    if (b.n === 0 || b.n >= SPREAD_PRIOR_UNTIL) return b.variance;
    const prior = YOUNG_CV * b.ms;
    return Math.max(b.variance, (YOUNG_PRIOR_SAMPLES * prior * prior + b.n * b.variance) / (YOUNG_PRIOR_SAMPLES + b.n - 1));
  }
  // Seen only under load, its first round trips' mean already holds whatever queueing they met.
  if (b.n === 0) return b.firstVariance;
  const prior = YOUNG_CV * b.firstMs;
  const seen = b.provisional - 1;
  return (YOUNG_PRIOR_SAMPLES * prior * prior + seen * Math.max(b.variance, b.firstVariance)) / (YOUNG_PRIOR_SAMPLES + seen);
}

const STRATUM_COUNTS = new Map<number, number>();
const CLASS_COUNTS = new Map<number, number>();
const ORDER = new Uint16Array(WINDOW_RESERVOIR);
const STRATUM_SUMS = new Map<number, { sum: number; taken: number }>();
const RESIDUALS = new Float64Array(WINDOW_RESERVOIR);

/**
 * The trimmed mean, 20th and 80th percentiles of a window whose samples name their strata
 * (latency classes), each class weighted by its share of the recent traffic rather than by how
 * many of its samples the window happens to hold: each class's own trimmed mean so weighted.
 * A window of five samples against a site whose 50-150 ms pages are one request in seven held
 * three of them as often as not, read 40-60 ms against a 5-15 ms mix, and cut a closed loop's
 * limit by an eighth each time (a normal-day trial); queueing in the origin delays every class
 * alike, and still shows in full. Undefined (use trimmedMean) unless every kept sample names a
 * stratum, at least two do, and their shares are known.
 */
function stratifiedTrimmedMean(
  values: Float64Array,
  strata: Int32Array,
  n: number,
  shares: ReadonlyMap<number, number>,
): { mean: number; p20: number; p50: number; p80: number } | undefined {
  if (shares.size < 2) return undefined;
  const counts = STRATUM_COUNTS;
  counts.clear();
  for (let i = 0; i < n; i++) {
    const k = strata[i]!;
    if (k < 0) return undefined;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  if (counts.size < 2) return undefined;
  let total = 0;
  for (const k of counts.keys()) total += shares.get(k) ?? 0;
  if (!(total > 0)) return undefined;
  const order = ORDER.subarray(0, n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => values[a]! - values[b]!);
  // The percentiles: of the window's round trips, each class weighted by its share.
  let cum = 0;
  let p20 = values[order[0]!]!;
  let p50 = p20;
  let p80 = p20;
  for (const i of order) {
    const k = strata[i]!;
    const w = (shares.get(k) ?? 0) / total / counts.get(k)!;
    if (w === 0) continue;
    const x = values[i]!;
    if (cum < 0.2) p20 = x;
    if (cum < 0.5) p50 = x;
    if (cum < 0.8) p80 = x;
    cum += w;
  }
  // The mean: each class's own trimmed mean (its slowest fifth dropped), weighted by its share.
  // Not the fastest 80 % of the weight: where a class of 100-250 ms pages is seven requests in
  // ten beside 5-20 ms API calls, that cut the slowest third of the pages, a legitimate part of
  // their cost, and a window read a fifth below what its classes take with nobody queueing.
  const sums = STRATUM_SUMS;
  sums.clear();
  for (const i of order) {
    const k = strata[i]!;
    const seen = sums.get(k);
    const keepK = counts.get(k)! - Math.floor(counts.get(k)! / 5);
    if (seen === undefined) sums.set(k, { sum: values[i]!, taken: 1 });
    else if (seen.taken < keepK) {
      seen.sum += values[i]!;
      seen.taken++;
    }
  }
  let sum = 0;
  let weight = 0;
  for (const [k, { sum: sk, taken }] of sums) {
    const share = shares.get(k) ?? 0;
    sum += (share * sk) / taken;
    weight += share;
  }
  return { mean: weight > 0 ? sum / weight : p50, p20, p50, p80 };
}

/** A probe's samples of one stratum (see Gradient2Limit.probeStrata). */
interface ProbeStratum {
  sum: number;
  sq: number;
  count: number;
  share: number;
  /** When each sample's request started, and its round trip as the origin took it, in the order they came back (probeSamples at most). */
  starts: number[];
  raws: number[];
}

/**
 * A probe's round trips of one latency class that show the origin got quicker while it ran:
 * in the order their requests started, every one from some point on at most 1 /
 * PROBE_STEP_RATIO of every one before it, with two or more before and MIN_BASELINE_SAMPLES
 * or more after. A probe measures the origin as it is now, so those since the change alone
 * are kept, and read again the same way (a queue draining after a slowdown, 900, 600, 300,
 * 120, 60 ms and then five of 55, is left at the last six, 56 ms, not 94 +/- 80; review). Their mean
 * was taken whole before: a probe that began while every answer took ten times as long and
 * ended as they came quick again read two of 900 ms and eight of 55 as a no-load round trip
 * of 224 ms, and their spread as the class's own (NOISE_SE), so that no window could read as
 * a queue nor as far quicker (the drift rule), and the limit climbed past the origin's slots
 * until the next probe (the fleet bench's gateways, 12-13 each for their share of 8 slots
 * after a 20 s slowdown, against 4-5 when no probe straddled its end). Two or more before,
 * since one slow round trip first is a wide class's chance (a class of 20 and 200 ms requests
 * split in 3-5 % of probes on one; exponential round trips 2.5-3.4 %, with two 0.6 %;
 * review's draws). Not a slower step: the samples after it can be the queue of another
 * gateway whose probe ended first (four of 50 ms and six of 130 kept 130 ms with no spread),
 * and an origin that got slower is the fall probe's and PROBE_ROSE_RATIO's. Samples of no
 * class (a site's whole mix) are taken whole.
 */
function sinceStep(st: ProbeStratum): void {
  for (;;) {
    const n = st.raws.length;
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => st.starts[a]! - st.starts[b]!);
    // The most round trip from each position on, in start order.
    const highFrom = new Float64Array(n);
    for (let j = n - 1, high = -Infinity; j >= 0; j--) highFrom[j] = high = Math.max(high, st.raws[order[j]!]!);
    let low = Infinity;
    let split = 0;
    for (let i = 1; i <= n - MIN_BASELINE_SAMPLES; i++) {
      low = Math.min(low, st.raws[order[i - 1]!]!);
      if (i >= PROBE_STEP_BEFORE && PROBE_STEP_RATIO * highFrom[i]! <= low) {
        split = i;
        break;
      }
    }
    if (split === 0) return;
    const kept = order.slice(split);
    st.starts = kept.map((j) => st.starts[j]!);
    st.raws = kept.map((j) => st.raws[j]!);
    st.sum = 0;
    st.sq = 0;
    for (const y of st.raws) {
      st.sum += y;
      st.sq += y * y;
    }
    st.count = st.raws.length;
  }
}

/**
 * A probe's mean round trip: each stratum weighted by its share (see stratifiedTrimmedMean), or
 * the plain mean where that does not apply (one stratum, a sample of none, no share known).
 * `strata` holds at least one sample.
 */
function probeMean(strata: ReadonlyMap<number, { sum: number; count: number; share: number }>): number {
  let total = 0;
  let weighted = 0;
  let sum = 0;
  let count = 0;
  for (const st of strata.values()) {
    total += st.share;
    weighted += (st.share * st.sum) / st.count;
    sum += st.sum;
    count += st.count;
  }
  return strata.size >= 2 && !strata.has(-1) && total > 0 ? weighted / total : sum / count;
}
