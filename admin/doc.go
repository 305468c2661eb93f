// Package admin is shroud's admin API: the key-rotation jobs (rewrap,
// reencrypt, identity; package jobs) started, watched and cancelled over
// HTTP, on a listener of their own, never the distribution API's.
//
//	POST /admin/v1/jobs              a job's jobs.Spec -> 202 {id, state, ...}
//	GET  /admin/v1/jobs              the job running and the last ones ended
//	GET  /admin/v1/jobs/{id}         its state, per-repository progress, reports, error
//	POST /admin/v1/jobs/{id}/cancel  stop it (its checkpoint stays: the same spec resumes it)
//
// Decisions:
//   - Every request carries the bearer token of the token file
//     (LoadToken refuses a file that is missing, empty, too short or
//     readable by every user); it is compared in constant time, and a
//     request without it or with another gets one and the same 401,
//     whatever was wrong.
//   - One job at a time: a second start while one is queued or running
//     is 409 CONFLICT. A job runs with the handler it is given (the
//     server's policy, keys, key checks and audit log), and its
//     checkpoint is the one `shroud rotate` uses (<dir>/<kind>.checkpoint),
//     so the command line finishes what the API started, and back.
//   - The spec of the job running is kept in <dir>/admin-job.json (mode
//     0600, written whole or not at all) until the job ends (done, failed,
//     cancelled). A server stopped or killed mid-job finds it at its next
//     start and resumes the job, under the same id; the checkpoint skips
//     what was written.
//   - Every request that changes something (a start, a cancel) and every
//     request refused is a line of the audit log (kind "admin"), actor
//     "token"; the token itself never is, nor is it logged.
//   - Metrics: shroud.job.manifests {shroud.job.kind, shroud.job.outcome =
//     rewritten | left | failed} and shroud.job.running {shroud.job.kind};
//     each step goes to the log too.
package admin
