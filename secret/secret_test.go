package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestValueNeverPrints(t *testing.T) {
	const s = "hunter2-is-the-password"
	v := New(s)
	holder := struct {
		Name     string
		Password Value
		Ptr      *Value
	}{"peer", v, &v}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s"} {
		outs = append(outs, fmt.Sprintf(verb, v), fmt.Sprintf(verb, holder))
	}
	outs = append(outs, fmt.Sprint(v), fmt.Sprintln(holder), v.String())
	j, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("msg", "password", v, "holder", holder)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("msg", "password", v, "holder", holder)
	outs = append(outs, buf.String())
	for _, o := range outs {
		if strings.Contains(o, s) || strings.Contains(o, fmt.Sprintf("%x", s)) {
			t.Errorf("secret printed: %s", o)
		}
	}
	if v.Reveal() != s || !v.IsSet() || v.Len() != len(s) {
		t.Errorf("Reveal/IsSet/Len = %q/%v/%d", v.Reveal(), v.IsSet(), v.Len())
	}
	if New("") != (Value{}) || New("a") != New("a") || New("a") == New("b") {
		t.Error("Values do not compare by content")
	}
}
