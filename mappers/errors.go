package mappers

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a mapping file, positioned at the YAML node (or the character inside
// an expression) it is about. Line and Col are 1-based; 0 means the position is unknown.
type Error struct {
	File string
	Line int
	Col  int
	Path string // YAML path, e.g. "fields[3].value"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found in a mapping file, in file order. Parse reports all of them
// at once so an admin fixes a file in one round.
type ErrorList []*Error

func (l ErrorList) Error() string {
	switch len(l) {
	case 0:
		return "mappers: no errors"
	case 1:
		return l[0].Error()
	}
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// sort orders by position; errors without a position come first (they are about the file).
func (l ErrorList) sort() {
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Line != l[j].Line {
			return l[i].Line < l[j].Line
		}
		return l[i].Col < l[j].Col
	})
}

// Errors returns the individual problems of err when it is (or wraps) an ErrorList.
func Errors(err error) ErrorList {
	var l ErrorList
	if errors.As(err, &l) {
		return l
	}
	return nil
}

// RenderError is a failure of one expression while rendering an event: the expression
// dereferenced something absent without `?.`, added nil to a string, and so on. Rendering the
// same event again fails the same way, so the worker dead-letters it with this message.
type RenderError struct {
	Path string // YAML path of the expression, e.g. "fields[3].value"
	File string
	Line int
	Col  int
	Err  error
}

func (e *RenderError) Error() string {
	return fmt.Sprintf("mappers: render %s (%s:%d:%d): %v", e.Path, e.File, e.Line, e.Col, e.Err)
}

func (e *RenderError) Unwrap() error { return e.Err }
