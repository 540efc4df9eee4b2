/* SPDX-License-Identifier: MIT */
/*
 * base_assign: the balanced token-to-expert assignment of BASE layers, solved
 * exactly (to a gap far below float resolution) by a Gauss-Seidel forward
 * auction with epsilon-scaling. Tokens bid for the capacity slots of the
 * experts; the slots of one expert are "similar objects" (Bertsekas), kept in
 * a per-expert min-heap on price so that a bidder sees the cheapest slot of
 * each expert and, for its second-best value, also the second-cheapest slot
 * of its best expert. When the experts have more slots than there are tokens,
 * dummy bidders that value every slot alike fill the spare slots: that makes
 * the problem square, where carrying prices from one scaling phase to the
 * next is sound (a forward auction on the rectangular problem can strand a
 * slot that was bid up in an early phase and then left empty, and miss the
 * optimum).
 */
#include "base_assign.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "util/scratch.h"

/*
 * Epsilon schedule. The first phase starts at range/8 (Bertsekas suggests a
 * fraction of the value range) and every phase divides by 8. The last phase
 * runs at range * 1e-9 / n, so the n * eps bound on the gap to the optimum is
 * 1e-9 of the value range: below the resolution of the float input, hence the
 * optimum itself whenever it is unique to float precision. The floor of
 * range * 2^-40 keeps eps about a thousand ulps above the prices (which stay
 * within a few ranges of 0, see auction_normalize()), so every bid moves a
 * price by a representable amount.
 */
#define EPS_START_DIV 8.0
#define EPS_SHRINK    8.0
#define EPS_END_REL   1e-9
#define EPS_FLOOR_REL 0x1p-40

#define NO_OWNER UINT32_MAX

struct auction {
	uint32_t n_tokens; /* real bidders: 0 .. n_tokens-1; dummies after */
	uint32_t n_experts;
	uint32_t cap;      /* slots per expert; slot s belongs to expert s / cap */
	uint32_t n;        /* bidders == slots == n_experts * cap */
	double range;      /* max - min affinity, > 0 */
	double *value;     /* [n_tokens][n_experts] affinity - min, in [0, range] */
	double *dummy_row; /* [n_experts] zeros: a dummy values every slot alike */
	double *price;     /* [n] per slot */
	double *min_price; /* [n_experts] price of the heap root, scanned by every bid */
	uint32_t *heap;    /* [n_experts][cap] min-heap of local slot indices on price */
	uint32_t *owner;   /* [n] bidder holding the slot, or NO_OWNER */
	uint32_t *queue;   /* [n] ring of unassigned bidders, FIFO for determinism */
};

/* All prices 0, every heap in index order (valid for equal keys). 0 or -ENOMEM. */
static int auction_init(struct auction *a, const float *affinity, uint32_t n_tokens,
			uint32_t n_experts, uint32_t cap, float lo, double range, struct scratch *s)
{
	size_t n = (size_t)n_experts * cap;
	size_t n_values = (size_t)n_tokens * n_experts;

	*a = (struct auction){
		.n_tokens = n_tokens,
		.n_experts = n_experts,
		.cap = cap,
		.n = (uint32_t)n,
		.range = range,
	};
	/* from the batch's scratch: a steady stream of batches allocates nothing */
	a->value = scratch_alloc(s, sizeof(*a->value) * n_values);
	a->dummy_row = scratch_calloc(s, n_experts, sizeof(*a->dummy_row));
	a->price = scratch_calloc(s, n, sizeof(*a->price));
	a->min_price = scratch_calloc(s, n_experts, sizeof(*a->min_price));
	a->heap = scratch_alloc(s, sizeof(*a->heap) * n);
	a->owner = scratch_alloc(s, sizeof(*a->owner) * n);
	a->queue = scratch_alloc(s, sizeof(*a->queue) * n);
	if (!a->value || !a->dummy_row || !a->price || !a->min_price || !a->heap || !a->owner ||
	    !a->queue)
		return -ENOMEM;
	/* Shifting by the minimum keeps values and prices on the same scale,
	 * so value - price loses no more than an ulp of the range even when
	 * the affinities sit far from 0 (1e6 + tiny differences). */
	for (size_t i = 0; i < n_values; i++)
		a->value[i] = (double)affinity[i] - (double)lo;
	for (uint32_t e = 0; e < n_experts; e++)
		for (uint32_t k = 0; k < cap; k++)
			a->heap[(size_t)e * cap + k] = k;
	return 0;
}

/* Restore the heap of one expert after its root slot's price went up. */
static void heap_sift_root(const double *price, uint32_t *heap, uint32_t n)
{
	uint32_t i = 0, k = heap[0];
	double p = price[k];

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && price[heap[c + 1]] < price[heap[c]])
			c++;
		if (price[heap[c]] >= p)
			break;
		heap[i] = heap[c];
		i = c;
	}
	heap[i] = k;
}

/*
 * Shift all prices so the cheapest slot costs 0. A uniform shift changes no
 * decision of the square problem, and it keeps prices bounded by about two
 * ranges across phases (at the end of a phase every slot is held eps-happily,
 * so no two prices differ by more than range + eps). Returns the spread.
 */
static double auction_normalize(struct auction *a)
{
	double lo = INFINITY, hi = 0;

	for (uint32_t e = 0; e < a->n_experts; e++)
		lo = fmin(lo, a->min_price[e]);
	for (uint32_t s = 0; s < a->n; s++) {
		a->price[s] -= lo;
		hi = fmax(hi, a->price[s]);
	}
	for (uint32_t e = 0; e < a->n_experts; e++)
		a->min_price[e] -= lo;
	return hi;
}

/*
 * One scaling phase: every bidder starts unassigned and the auction runs,
 * from the prices the previous phase left, until each holds a slot within
 * eps of its best value. (Keeping the bidders that are still eps-happy saves
 * nothing measurable: a shrink of eps by 8 leaves about 7 in 8 unhappy, and
 * the check costs as much as a bid.)
 *
 * Iteration cap: while some slot is free it keeps its start price p0 (a slot
 * that is bid on stays held), and a bidder that takes slot k could have had
 * that free slot j instead, so the bid sets p_k <= v_k - v_j + p0_j + eps <=
 * range + spread + eps, where spread is the largest start price (prices
 * start at >= 0 after normalisation). Every bid raises a price by at least
 * eps, so a phase ends after at most n * ((range + spread + eps) / eps + 1)
 * bids. The cap is twice that, for rounding; finite input cannot reach it
 * (the floor on eps and the nextafter() below keep every bid a real price
 * increase), and reaching it would mean a broken invariant, reported as
 * -EDOM rather than a hung router.
 */
static int auction_phase(struct auction *a, double eps, double spread)
{
	const uint32_t n = a->n, n_experts = a->n_experts, cap = a->cap;
	double budget = 2.0 * n * ((a->range + spread + eps) / eps + 1.0);
	uint64_t max_bids = budget >= 0x1p63 ? UINT64_MAX : (uint64_t)budget;
	uint32_t head = 0, n_queued = n;

	for (uint32_t i = 0; i < n; i++) {
		a->owner[i] = NO_OWNER;
		a->queue[i] = i;
	}
	for (uint64_t bids = 0; n_queued; bids++) {
		uint32_t bidder = a->queue[head], best = 0, slot, prev;
		const double *row;
		double v1 = -INFINITY, v2 = -INFINITY, p_old, p_new;
		double *eprice;
		uint32_t *eheap;

		if (bids >= max_bids)
			return -EDOM;
		head = head + 1 == n ? 0 : head + 1;
		n_queued--;

		row = bidder < a->n_tokens ? a->value + (size_t)bidder * n_experts : a->dummy_row;
		/* Best and second-best expert at their cheapest slots; strict >
		 * keeps the lowest index on ties. */
		for (uint32_t e = 0; e < n_experts; e++) {
			double v = row[e] - a->min_price[e];

			if (v > v1) {
				v2 = v1;
				v1 = v;
				best = e;
			} else if (v > v2) {
				v2 = v;
			}
		}
		eprice = a->price + (size_t)best * cap;
		eheap = a->heap + (size_t)best * cap;
		/* Similar objects: the runner-up may be another slot of the same
		 * expert. Leaving it out would overbid past that slot and leave
		 * the bidder unhappy by more than eps. */
		if (cap >= 2) {
			double p2 = eprice[eheap[1]];

			if (cap >= 3 && eprice[eheap[2]] < p2)
				p2 = eprice[eheap[2]];
			if (row[best] - p2 > v2)
				v2 = row[best] - p2;
		}
		/* v2 is finite: with one expert the caller's argmax always fits,
		 * so the auction runs only with two or more. */
		slot = eheap[0];
		p_old = eprice[slot];
		p_new = row[best] - v2 + eps;
		if (!(p_new > p_old))
			p_new = nextafter(p_old, INFINITY);
		eprice[slot] = p_new;
		heap_sift_root(eprice, eheap, cap);
		a->min_price[best] = eprice[eheap[0]];

		slot += best * cap;
		prev = a->owner[slot];
		a->owner[slot] = bidder;
		if (prev != NO_OWNER) {
			uint32_t tail = head + n_queued;

			a->queue[tail >= n ? tail - n : tail] = prev;
			n_queued++;
		}
	}
	return 0;
}

static int auction_solve(struct auction *a)
{
	double eps = a->range / EPS_START_DIV;
	double eps_end = fmax(a->range * EPS_END_REL / a->n, a->range * EPS_FLOOR_REL);
	double spread = 0;
	int r;

	for (;;) {
		r = auction_phase(a, eps, spread);
		if (r < 0)
			return r;
		if (eps <= eps_end)
			return 0;
		eps = fmax(eps / EPS_SHRINK, eps_end);
		spread = auction_normalize(a);
	}
}

/* Each token's best expert, lowest index on ties. */
static uint32_t row_argmax(const float *row, uint32_t n_experts)
{
	uint32_t best = 0;

	for (uint32_t e = 1; e < n_experts; e++)
		if (row[e] > row[best])
			best = e;
	return best;
}

int base_assign_balanced(const float *affinity, uint32_t n_tokens, uint32_t n_experts,
			 uint32_t capacity, struct scratch *s, int32_t *ret_expert)
{
	struct auction a;
	uint32_t *load, cap;
	float lo, hi;
	bool fits;
	int r;

	if (n_tokens == 0)
		return 0;
	if (!affinity || !ret_expert || n_experts > INT32_MAX ||
	    (uint64_t)capacity * n_experts < n_tokens)
		return -EINVAL;

	lo = hi = affinity[0];
	for (size_t i = 0; i < (size_t)n_tokens * n_experts; i++) {
		if (!isfinite(affinity[i]))
			return -EINVAL;
		lo = fminf(lo, affinity[i]);
		hi = fmaxf(hi, affinity[i]);
	}
	if (lo == hi) {
		/* Every assignment has the same total: spread evenly, which
		 * fits because capacity >= ceil(n_tokens / n_experts). */
		for (uint32_t t = 0; t < n_tokens; t++)
			ret_expert[t] = (int32_t)(t % n_experts);
		return 0;
	}

	/* If every token's favourite has room, that is the optimum (each
	 * token at its own maximum); this also covers one expert and
	 * capacities too loose to bind, without an auction. */
	load = scratch_calloc(s, n_experts, sizeof(*load));
	if (!load)
		return -ENOMEM;
	for (uint32_t t = 0; t < n_tokens; t++)
		load[row_argmax(affinity + (size_t)t * n_experts, n_experts)]++;
	fits = true;
	for (uint32_t e = 0; e < n_experts; e++)
		fits = fits && load[e] <= capacity;
	if (fits) {
		for (uint32_t t = 0; t < n_tokens; t++)
			ret_expert[t] = (int32_t)row_argmax(affinity + (size_t)t * n_experts,
							    n_experts);
		return 0;
	}

	/* No expert can take more than all tokens, so a larger capacity only
	 * adds dummy bidders. Past 2^32 - 1 slots the working set could not
	 * be allocated anyway. */
	cap = capacity < n_tokens ? capacity : n_tokens;
	if ((uint64_t)cap * n_experts >= UINT32_MAX)
		return -ENOMEM;

	r = auction_init(&a, affinity, n_tokens, n_experts, cap, lo, (double)hi - (double)lo, s);
	if (r < 0)
		return r;
	r = auction_solve(&a);
	if (r < 0)
		return r;
	for (uint32_t slot = 0; slot < a.n; slot++)
		if (a.owner[slot] < n_tokens)
			ret_expert[a.owner[slot]] = (int32_t)(slot / cap);
	return 0;
}
