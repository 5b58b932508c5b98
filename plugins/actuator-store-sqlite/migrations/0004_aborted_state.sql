-- `aborted` is a terminal state of its own: an aborted rollout no longer holds its slot.
DROP INDEX rollouts_one_active_per_slot;
CREATE UNIQUE INDEX rollouts_one_active_per_slot ON rollouts (slot)
    WHERE state NOT IN ('completed', 'rolled_back', 'failed', 'aborted');
