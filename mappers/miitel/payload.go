// Package miitel holds the types of MiiTel's "Outgoing Webhook" (call history) payload and
// the queued event that carries one call detail from the receiver to the worker.
//
// It lives under mappers because mapping expressions are type-checked against these types;
// the receiver imports it to parse and validate requests, the worker to merge events. It
// imports nothing of this project, so no cycle can form.
//
// Nullable fields are pointers and lists are slices: MiiTel sends null for an unanswered
// call's analysis and omits whole sections (phrases, keywords) when the admin switched them
// off, and the minutes event carries only a handful of keys. Unknown keys are ignored.
package miitel

// Webhook is one request body. Every top-level key other than "call" and "challenge" is an
// "additional payload" key configured by the MiiTel admin; the receiver keeps those apart.
type Webhook struct {
	Challenge *string `json:"challenge,omitempty"`
	Call      *Call   `json:"call,omitempty"`
}

// Call is the call history: one call id, several details (legs of the call).
type Call struct {
	ID         string   `json:"id"`
	TenantCode string   `json:"tenant_code"`
	Details    []Detail `json:"details"`
}

// Detail is one leg of a call. Its id is what a CRM activity is keyed by.
type Detail struct {
	ID                 string             `json:"id" expr:"id"`
	DialStartsAt       *string            `json:"dial_starts_at" expr:"dial_starts_at"`
	DialAnsweredAt     *string            `json:"dial_answered_at" expr:"dial_answered_at"`
	DialEndsAt         *string            `json:"dial_ends_at" expr:"dial_ends_at"`
	QueueingStartsAt   *string            `json:"queueing_starts_at" expr:"queueing_starts_at"`
	QueueingAnsweredAt *string            `json:"queueing_answered_at" expr:"queueing_answered_at"`
	QueueingEndsAt     *string            `json:"queueing_ends_at" expr:"queueing_ends_at"`
	CallType           string             `json:"call_type" expr:"call_type"`
	CircuitNumber      *string            `json:"circuit_number" expr:"circuit_number"`
	CircuitName        *string            `json:"circuit_name" expr:"circuit_name"`
	FromNumber         *string            `json:"from_number" expr:"from_number"`
	ToNumber           *string            `json:"to_number" expr:"to_number"`
	PreviousID         *string            `json:"previous_id" expr:"previous_id"`
	DTMF               *string            `json:"dtmf" expr:"dtmf"`
	Minutes            *string            `json:"minutes,omitempty" expr:"minutes"`
	Analysis           *Analysis          `json:"analysis,omitempty" expr:"analysis"`
	Participants       []Participant      `json:"participants,omitempty" expr:"participants"`
	Tags               []Tag              `json:"tags,omitempty" expr:"tags"`
	Comments           []Comment          `json:"comments,omitempty" expr:"comments"`
	Keywords           []Keyword          `json:"keywords,omitempty" expr:"keywords"`
	Phrases            []Phrase           `json:"phrases,omitempty" expr:"phrases"`
	SpeechRecognition  *SpeechRecognition `json:"speech_recognition,omitempty" expr:"speech_recognition"`
}

// Analysis is MiiTel's speech evaluation of the whole call.
type Analysis struct {
	Score            *float64    `json:"score" expr:"score"`
	TLR              *float64    `json:"tlr" expr:"tlr"`
	RallyCount       *int64      `json:"rally_count" expr:"rally_count"`
	OverlapCount     *int64      `json:"overlap_count" expr:"overlap_count"`
	SilenceCount     *int64      `json:"silence_count" expr:"silence_count"`
	SilencePositions [][]float64 `json:"silence_positions,omitempty" expr:"silence_positions"`
	OverlapPositions [][]float64 `json:"overlap_positions,omitempty" expr:"overlap_positions"`
}

// Participant is one speaker. For the rep, LoginID is the MiiTel login (an e-mail address).
type Participant struct {
	ID          string               `json:"id" expr:"id"`
	FromTo      string               `json:"from_to" expr:"from_to"`
	Name        *string              `json:"name" expr:"name"`
	CompanyName *string              `json:"company_name" expr:"company_name"`
	LoginID     *string              `json:"login_id" expr:"login_id"`
	Analysis    *ParticipantAnalysis `json:"analysis,omitempty" expr:"analysis"`
}

// ParticipantAnalysis is the voice evaluation of one speaker.
type ParticipantAnalysis struct {
	F0            *float64 `json:"f0" expr:"f0"`
	SpeechRate    *float64 `json:"speechrate" expr:"speechrate"`
	Variance      *float64 `json:"variance" expr:"variance"`
	FillerCount   *float64 `json:"filler_count" expr:"filler_count"`
	PositiveScore *float64 `json:"positive_score" expr:"positive_score"`
	NegativeScore *float64 `json:"negative_score" expr:"negative_score"`
}

// Tag is a call memo; SYSTEM memos are set automatically, TENANT_USER ones by a rep.
type Tag struct {
	CreatedBy   string `json:"created_by" expr:"created_by"`
	CreatorType string `json:"creator_type" expr:"creator_type"`
	Value       string `json:"value" expr:"value"`
}

// Comment is a free-text comment on the call.
type Comment struct {
	CreatedAt string `json:"created_at" expr:"created_at"`
	CreatedBy string `json:"created_by" expr:"created_by"`
	Value     string `json:"value" expr:"value"`
}

// Keyword is one appearance of a tracked keyword, StartsAt seconds into the call.
type Keyword struct {
	StartsAt      float64 `json:"starts_at" expr:"starts_at"`
	ParticipantID string  `json:"participant_id" expr:"participant_id"`
	Value         string  `json:"value" expr:"value"`
}

// Phrase is one speaker's recognised speech, raw and summarised.
type Phrase struct {
	ParticipantID string       `json:"participant_id" expr:"participant_id"`
	Raw           []PhraseItem `json:"raw,omitempty" expr:"raw"`
	Summary       []PhraseItem `json:"summary,omitempty" expr:"summary"`
}

// PhraseItem is one utterance; StartAt and EndAt are seconds into the call.
type PhraseItem struct {
	Order          int64   `json:"order" expr:"order"`
	Phrase         string  `json:"phrase" expr:"phrase"`
	PhraseNoFiller string  `json:"phrase_nofiller" expr:"phrase_nofiller"`
	StartAt        float64 `json:"start_at" expr:"start_at"`
	EndAt          float64 `json:"end_at" expr:"end_at"`
	FillerNum      *int64  `json:"filler_num" expr:"filler_num"`
}

// SpeechRecognition is the transcript as MiiTel formats it ("0:01 (Customer) ...").
type SpeechRecognition struct {
	Raw     string `json:"raw" expr:"raw"`
	Summary string `json:"summary" expr:"summary"`
}
