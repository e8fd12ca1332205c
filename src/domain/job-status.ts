/** A job's status at G2 Sentry, in the order of its life (Canceled ends it early). */
export const JOB_STATUSES = ['New', 'Assigned', 'InProgress', 'Completed', 'Canceled'] as const
export type JobStatus = (typeof JOB_STATUSES)[number]
