{{/* Helpers of the stream consumers (stream.yaml). */}}

{{/*
"true" when two MQTT topic filters match a common topic, else "": call with (list "a/+/c" "a/#").
Level by level: "#" matches the rest (and the parent level: a/# matches a), "+" any one level, else the
levels must be equal.
*/}}
{{- define "skiff.topicFiltersOverlap" -}}
{{- $a := splitList "/" (index . 0) -}}
{{- $b := splitList "/" (index . 1) -}}
{{- $overlap := true -}}
{{- $done := false -}}
{{- range $i, $x := $a -}}
{{- if not $done -}}
{{- if ge $i (len $b) -}}
{{- $overlap = eq $x "#" -}}
{{- $done = true -}}
{{- else -}}
{{- $y := index $b $i -}}
{{- if or (eq $x "#") (eq $y "#") -}}
{{- $done = true -}}
{{- else if and (ne $x $y) (ne $x "+") (ne $y "+") -}}
{{- $overlap = false -}}
{{- $done = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (not $done) (gt (len $b) (len $a)) -}}
{{- $overlap = eq (index $b (len $a)) "#" -}}
{{- end -}}
{{- if $overlap -}}true{{- end -}}
{{- end -}}

{{/*
The errors of one stream consumer's subscription (topic, replicas, partitions), one a line, for
skiff.validateValues: call with (dict "i" <index> "c" <consumer>).
*/}}
{{- define "skiff.streamPartitionErrors" -}}
{{- $i := .i -}}
{{- $c := .c -}}
{{- $errors := list -}}
{{- $where := printf "stream.consumers[%d] (%s)" (int $i) $c.name -}}
{{- if and (not $c.topic) (not $c.partitions) -}}
{{- $errors = append $errors (printf "%s: give topic (one subscription, shared between its replicas) or partitions (topic filters per consumer)" $where) -}}
{{- end -}}
{{- if $c.partitions -}}
{{- if $c.topic -}}
{{- $errors = append $errors (printf "%s: give topic or partitions, not both: each partition subscribes to its own topics" $where) -}}
{{- end -}}
{{- if hasKey $c "replicas" -}}
{{- $errors = append $errors (printf "%s: replicas does not apply to partitions (each partition is one consumer): add partitions to scale out" $where) -}}
{{- end -}}
{{- if hasKey $c "group" -}}
{{- $errors = append $errors (printf "%s: group names a shared subscription, which partitions do not use: leave it out" $where) -}}
{{- end -}}
{{- $names := dict -}}
{{- range $p := $c.partitions -}}
{{- if hasKey $names $p.name -}}
{{- $errors = append $errors (printf "%s: the partition name %q is used twice" $where $p.name) -}}
{{- end -}}
{{- $_ := set $names $p.name true -}}
{{- range $k, $s := $p.topics -}}
{{- range $t := slice $p.topics (add1 $k) -}}
{{- if include "skiff.topicFiltersOverlap" (list $s $t) -}}
{{- $errors = append $errors (printf "%s: partition %s lists the topic filters %q and %q, which match the same topics: the broker may deliver such a message once per filter, and skiff stream refuses them; make them disjoint" $where $p.name $s $t) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $j, $p := $c.partitions -}}
{{- range $q := slice $c.partitions (add1 $j) -}}
{{- range $s := $p.topics -}}
{{- range $t := $q.topics -}}
{{- if include "skiff.topicFiltersOverlap" (list $s $t) -}}
{{- $errors = append $errors (printf "%s: partitions %s and %s overlap (the topic filters %q and %q match the same topics): a device's readings would reach two consumers and be counted twice; make the filters disjoint" $where $p.name $q.name $s $t) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- else if and $c.spec.windows (gt (int (default 1 $c.replicas)) 1) -}}
{{- $errors = append $errors (printf "%s: its spec declares windows, and %d replicas on the shared subscription $share/%s/%s would split each device's readings between them and break its windows: run one replica, or list partitions (each with its own topic filters, subscribed without $share/; docs/tasks/stream.md, Past one consumer)" $where (int $c.replicas) (default $c.name $c.group) $c.topic) -}}
{{- end -}}
{{- join "\n" $errors -}}
{{- end -}}
