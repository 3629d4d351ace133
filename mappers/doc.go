// Package mappers turns MiiTel call events into connector-neutral CRM records through
// admin-editable YAML mapping files. docs/mapping.md is the reference of the language; this
// comment is the map of the package.
//
// A mapping file names a CRM and object, the external-id field (default value: the MiiTel
// detail id), skip rules, lookup tables, an ordered list of fields, and the contact (the
// customer's phone number) and owner (the rep's e-mail) lookups the worker performs:
//
//	version: 1
//	crm: salesforce
//	object: Task
//	external_id: {field: MiiTel_Detail_Id__c}
//	skip:
//	  - when: internal
//	    reason: internal extension call
//	fields:
//	  - name: CallDurationInSeconds
//	    value: 'answered ? duration_s(answered_at, ended_at) : 0'
//	  - name: TaskSubtype
//	    const: Call
//	    create_only: true
//	contact: {number: customer_number, field: WhoId}
//	owner: {email: rep_email, field: OwnerId}
//
// Expressions are github.com/expr-lang/expr programs, type-checked at load time against Env
// (the event, the detail, shortcuts and derived facts such as direction, outcome,
// customer_number and rep_email) with typed builtins (durations, time zones, E.164 phone
// numbers, transcripts, joins, truncation, HTML, the MiiTel call URL, table lookups).
//
// Parse is strict and reports every problem at once as an ErrorList of
// "file:line:col: path: message": unknown keys, wrong types, expressions that do not compile
// or type-check, unknown tables, and expressions that fail at run time on one of the shapes
// MiiTel sends (a missed call full of nulls, a minutes-only event, ...), found by rendering
// synthetic events of each shape. A loaded Mapping is immutable; Render is safe for concurrent
// use, allocation-light and never panics. Nothing (nil, empty text) omits a field, so a
// later, poorer event never blanks what an earlier one wrote.
//
// Store holds the current Mapping of a file and swaps in a changed, valid file atomically
// (fsnotify on the directory, so Kubernetes ConfigMap symlink swaps are seen); an invalid file
// is logged, counted and ignored. Builtin returns the shipped mappings of package examples.
package mappers
