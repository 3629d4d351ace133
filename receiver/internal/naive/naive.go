// Package naive is the baseline receiver issue 9 measures ours against: what an afternoon
// gives. It binds the body into a two-field struct, enqueues it with one asynq Enqueue keyed
// by the call id, and does no auth, validation or logging. The benchmarks and the load
// harness (receiver/internal/loadrun) serve this one handler, so both compare with the same.
package naive

import (
	"encoding/json"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// Handler answers POST on any path: 200 once the body is queued on queue, 400 for a body
// without a call, 503 when the enqueue fails.
func Handler(client *asynq.Client, queue string) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.POST("/*path", func(c *gin.Context) {
		raw, err := c.GetRawData()
		if err != nil {
			c.AbortWithStatus(http.StatusBadRequest)
			return
		}
		var in struct {
			Challenge *string `json:"challenge"`
			Call      *struct {
				ID string `json:"id"`
			} `json:"call"`
		}
		if err := json.Unmarshal(raw, &in); err != nil || in.Call == nil {
			c.AbortWithStatus(http.StatusBadRequest)
			return
		}
		t := asynq.NewTask(tasks.TypeCallEvent, raw)
		if _, err := client.EnqueueContext(c.Request.Context(), t, asynq.TaskID(in.Call.ID), asynq.Queue(queue)); err != nil {
			c.AbortWithStatus(http.StatusServiceUnavailable)
			return
		}
		c.JSON(http.StatusOK, gin.H{"status": "accepted", "call_id": in.Call.ID})
	})
	return e
}
